"""Bearer-token authentication of gRPC calls: ``authorization: Bearer <token>`` metadata, as HTTP's header.

Probes need no token, as over HTTP: the ``grpc.health.v1.Health`` service and the liveness and readiness RPCs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.api.middleware import bearer_matches
from service.grpc_api.call_context import behavior_kind, metadata_value
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
        sent = metadata_value(details, "authorization")
        if sent is not None and bearer_matches(sent.encode(), self.token):
            return handler
        reason = "missing" if sent is None else "invalid"
        return _denying(
            handler,
            f"bearer token {reason}; send metadata 'authorization: Bearer <token>' "
            "(the health service and the liveness and readiness RPCs need none)",
        )


def _denying(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour replaced by one that fails every call with UNAUTHENTICATED and ``message``."""

    async def deny(request: Any, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return handler._replace(**{behavior_kind(handler): deny})
