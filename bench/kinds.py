"""The bench's vocabulary: the servers it measures and the routes it sends requests on, with their report names."""

from __future__ import annotations

from typing import Literal

ServerKind = Literal["baseline", "bare", "service"]
#: What a sweep sends: v2 binary tensors, REST images, v2 binary tensors of 32 rows per request, or v2 tensors over
#: gRPC (unary ``ModelInfer``, or ``ModelStreamInfer`` streams).
Route = Literal["tensor", "image", "tensor_batch32", "grpc", "grpc_stream"]
SERVER_NAMES: dict[ServerKind, str] = {
    "baseline": "plain FastAPI",
    "bare": "bare ASGI, ORT inline, 1 worker/CPU",
    "service": "service (default settings)",
}
ROUTE_NAMES: dict[Route, str] = {
    "tensor": "v2 binary tensor",
    "image": "REST image",
    "tensor_batch32": "v2 binary, 32 rows/request",
    "grpc": "v2 gRPC unary",
    "grpc_stream": "v2 gRPC stream",
}
#: The gRPC routes, each compared with HTTP v2 binary ("tensor") at the same concurrencies.
GRPC_ROUTES: tuple[Route, ...] = ("grpc", "grpc_stream")
#: The service's routes measured fully loaded in each round of turns with raw ORT (``bench.turns``), and the one
#: measured at concurrency 1.
PEAK_ROUTES: tuple[Route, ...] = ("tensor", "image")
LONE_ROUTE: Route = "tensor"
