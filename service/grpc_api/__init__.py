"""KServe v2 over gRPC: Triton's ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``, beside HTTP.

The server (``server.py``) runs in the same process and on the same event loop as the HTTP app, so both protocols
share one data plane, batcher, admission bound and set of metrics. Inference goes straight to the data plane
(``inference.py``, ``tensors.py``); every other RPC is put to the HTTP route that answers it (``control.py``), so
there is one implementation of metadata, statistics and repository control, whole-server answers included.
"""
