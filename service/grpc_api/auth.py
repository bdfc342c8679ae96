"""Bearer-token authentication of gRPC calls: ``authorization: Bearer <token>`` metadata, as HTTP's header.

Probes need no token, as over HTTP: the ``grpc.health.v1.Health`` service and the liveness and readiness RPCs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.api.middleware import bearer_matches
from service.grpc_api.status import Context

#: Methods open without a token: what Kubernetes probes and load balancers call.
OPEN_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelReady",
    }
)
_HEALTH_SERVICE = "/grpc.health.v1.Health/"


class BearerAuth(grpc.aio.ServerInterceptor):
    """Refuses a call without the right token with UNAUTHENTICATED, before its handler runs.

    Args:
        token: The token every call (but probes) must carry.
    """

    def __init__(self, token: str) -> None:
        self.token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method in OPEN_METHODS or method.startswith(_HEALTH_SERVICE):
            return handler
        sent = next((value for key, value in details.invocation_metadata or () if key == "authorization"), None)
        if isinstance(sent, str) and bearer_matches(sent.encode(), self.token):
            return handler
        reason = "missing" if sent is None else "invalid"
        return _denying(
            handler,
            f"bearer token {reason}; send metadata 'authorization: Bearer <token>' "
            "(the health service and the liveness and readiness RPCs need none)",
        )


def _denying(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that fails every call with UNAUTHENTICATED and ``message``."""

    async def deny(request: Any, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    kind = next(name for name in kinds if getattr(handler, name) is not None)
    return kinds[kind](
        deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
