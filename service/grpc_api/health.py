"""The standard ``grpc.health.v1.Health`` service, so Kubernetes gRPC probes and gRPC load balancers work.

The server (service name ``""``) and ``inference.GRPCInferenceService`` are SERVING exactly while the HTTP
readiness route would answer 200: every worker's models loaded and warm, not draining. Other names are unknown.
``Watch`` streams the status as it changes, checked once a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.health import Readiness
from service.grpc_api.status import Context

SERVICES = ("", "inference.GRPCInferenceService")
WATCH_PERIOD_S = 1.0
_Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthService(health_pb2_grpc.HealthServicer):
    """Health of the server, from its readiness.

    Args:
        readiness: The server's readiness, as the HTTP route reports it.
    """

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    def _status(self, service: str) -> Any:
        if service not in SERVICES:
            return None
        return _Status.SERVING if self.readiness.server_ready() else _Status.NOT_SERVING

    async def Check(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        """SERVING or NOT_SERVING; NOT_FOUND for a service this server does not have."""
        status = self._status(request.service)
        if status is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service[:64]}'; known: {SERVICES}"
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change, until the client leaves (SERVICE_UNKNOWN for an unknown service)."""
        sent = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = _Status.SERVICE_UNKNOWN
            if status != sent:
                sent = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(WATCH_PERIOD_S)
