"""The gRPC server: Triton's inference service and the health service on ``CNNSERVE_GRPC_PORT``, on the app's loop.

It starts once the models are loaded (as the HTTP port answers only then) and stops in two steps: ``drain`` when the
HTTP server starts draining (new calls are refused with UNAVAILABLE, calls under way get the graceful shutdown
period), ``stop`` waits for that before the models close. In a multi-worker server every worker binds the port with
``SO_REUSEPORT``, which the supervisor reserved, and the kernel spreads connections over them; a single process binds
it alone, so a second server on the same port fails to start instead of silently sharing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from starlette.types import ASGIApp
from tritonclient.grpc import service_pb2_grpc

from service.admission import Admission
from service.api.health import Readiness
from service.dataplane import DataPlane
from service.grpc_api.auth import BearerAuth
from service.grpc_api.call_context import CallContext
from service.grpc_api.control import AppBridge, ControlPlane
from service.grpc_api.health import HealthService
from service.grpc_api.inference import InferencePlane
from service.grpc_api.status import Context
from service.repository import ConfigError
from service.settings import Settings

logger = logging.getLogger(__name__)


def _not_offered(what: str, instead: str) -> Callable[..., Awaitable[None]]:
    """An RPC this server does not offer: UNIMPLEMENTED, saying what to do instead (no traceback in the log)."""

    async def rpc(self: object, request: object, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not offered by cnnserve; {instead}")

    return rpc


_SHARED_MEMORY = ("shared memory", "send tensors in the request")


class InferenceService(InferencePlane, ControlPlane, service_pb2_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService``: inference on the data plane, the rest through the HTTP routes.

    Shared-memory, trace and log-settings RPCs are not offered: they answer UNIMPLEMENTED.
    """

    SystemSharedMemoryStatus = _not_offered(*_SHARED_MEMORY)
    SystemSharedMemoryRegister = _not_offered(*_SHARED_MEMORY)
    SystemSharedMemoryUnregister = _not_offered(*_SHARED_MEMORY)
    CudaSharedMemoryStatus = _not_offered(*_SHARED_MEMORY)
    CudaSharedMemoryRegister = _not_offered(*_SHARED_MEMORY)
    CudaSharedMemoryUnregister = _not_offered(*_SHARED_MEMORY)
    TraceSetting = _not_offered("tracing", "see the logs and the Prometheus metrics")
    LogSettings = _not_offered("changing log settings at run time", "set CNNSERVE_LOG_LEVEL")

    def __init__(self, plane: DataPlane, admission: Admission, bridge: AppBridge) -> None:
        self.plane = plane
        self.admission = admission
        self.bridge = bridge


def listen_address(host: str, port: int) -> str:
    """``host:port`` as gRPC writes it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """The process's gRPC server (see the module docstring).

    Args:
        settings: Host, port, message limits, token, graceful shutdown period.
        plane: Runs inference.
        admission: The process's in-flight bound, shared with HTTP.
        readiness: What the health service reports.
        app: The HTTP app, which answers every RPC but inference.
        shared_port: Bind with ``SO_REUSEPORT`` (a worker of a multi-worker server).
    """

    def __init__(
        self,
        settings: Settings,
        plane: DataPlane,
        admission: Admission,
        readiness: Readiness,
        app: ASGIApp,
        shared_port: bool,
    ) -> None:
        self.settings = settings
        self.port = settings.grpc_port
        self.shared_port = shared_port
        self.service = InferenceService(plane, admission, AppBridge(app, (settings.host, settings.grpc_port)))
        self.health = HealthService(readiness)
        self._server: Any = None  # made in start(): grpc.aio binds a server to the event loop running then
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            ConfigError: the port cannot be bound (in use, or the host is not this machine's).
        """
        settings = self.settings
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
            ("grpc.so_reuseport", int(self.shared_port)),
        ]
        token = settings.auth_token.get_secret_value() if settings.auth_token else None
        interceptors = [CallContext(settings.access_log), *([BearerAuth(token)] if token else [])]  # outermost first
        self._server = grpc.aio.server(options=options, interceptors=interceptors)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        address = listen_address(settings.host, self.port)
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as err:
            raise ConfigError(
                f"cannot listen for gRPC on {address} ({err}): is another server using the port? Choose another "
                "with CNNSERVE_GRPC_PORT / --grpc-port, or 0 to turn gRPC off"
            ) from err
        await self._server.start()
        logger.info(
            "serving gRPC (KServe v2, inference.GRPCInferenceService) on %s",
            listen_address(self.settings.host, self.port),
        )

    def drain(self) -> None:
        """Refuse new calls from now on; calls under way get the graceful shutdown period."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(
                self._server.stop(self.settings.graceful_shutdown_s)
            )

    async def stop(self) -> None:
        """Drain (if not already) and wait until the last call has ended."""
        self.drain()
        if self._stopping is not None:
            await self._stopping
