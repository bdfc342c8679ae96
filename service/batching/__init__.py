"""Dynamic batching: a bounded request queue, a dispatcher onto model instances, and the merge/split between them.

Nothing in this package knows HTTP or ONNX; ``batcher.Batcher`` is the one entry point the data plane uses.
"""
