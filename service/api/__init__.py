"""HTTP layer: REST classification, KServe v2, health; the fast path and middleware in front of them."""
