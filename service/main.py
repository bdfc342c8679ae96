"""The app factory: builds the service from ``Settings`` and wires its parts; the lifespan loads and drains models.

``uvicorn --factory service.main:create_app`` works as well as ``python -m service``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from service import __version__
from service.admission import STATE_KEY, Admission, InflightLimit
from service.api import health, prometheus, rest, v2, v2_repository
from service.api.cluster import ClusterMiddleware
from service.api.direct import DIRECT_KEY, DirectAnswers
from service.api.fastpath import FastPathMiddleware, ServiceApp
from service.api.middleware import RequestContextMiddleware
from service.api.routes import RouteGroup, hot_routes, install
from service.dataplane import DataPlane
from service.errors import install_error_handlers
from service.grpc_api.server import GrpcServer
from service.http_server import DRAIN_KEY
from service.idle_poll import IdlePoll
from service.image_decode import configure_pillow
from service.logs import configure_logging
from service.metrics import Metrics
from service.model_manager import ModelManager
from service.peers import Peers
from service.preprocess_fast import configure_opencv
from service.repository_poll import RepositoryPoller
from service.runtime import available_cpus, resolved_workers
from service.settings import Settings
from service.worker_activity import worker_activity

logger = logging.getLogger(__name__)

DESCRIPTION = """Inference serving for CNN image classifiers exported to ONNX.

* **REST**: `POST /v1/models/{model}/classify` with an image (raw body or multipart) answers the top-k labels.
* **KServe v2** (Triton-compatible, `tritonclient` works unchanged): metadata, config, stats, repository,
  infer with JSON tensors or the binary tensor extension, classification extension.
* **KServe v2 over gRPC** on `CNNSERVE_GRPC_PORT` (8001): Triton's `inference.GRPCInferenceService`, so
  `tritonclient.grpc` works unchanged, and `grpc.health.v1.Health`.
* **Metrics** at `/metrics` (Prometheus), including Triton's `nv_inference_*` names.

Errors are `{"error": "<message>", "code": "<code>"}` with a 4xx/5xx status.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; models load when the app's lifespan starts (under uvicorn, or a test client)."""
    settings = settings or Settings()
    configure_pillow()
    configure_opencv()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = ModelManager(settings, metrics)
    plane = DataPlane(
        models,
        metrics,
        max_image_pixels=settings.max_image_pixels,
        default_timeout_ms=settings.default_timeout_ms,
        preprocess_threads=settings.preprocess_threads
        or max(1, available_cpus() // resolved_workers(settings.workers)),
    )
    peers = Peers.from_environment()  # sibling workers, when the supervisor runs several
    readiness = health.Readiness(peers)

    poller = RepositoryPoller(models, settings.repository_poll_s) if settings.model_control == "poll" else None

    # Enforced by the HTTP front door (service/http_admission.py), which finds it in the lifespan state.
    admission = Admission(InflightLimit(settings.max_inflight_requests), metrics.shed, settings.access_log)
    metrics.server_inflight = lambda: admission.policy.inflight

    grpc_server: GrpcServer | None = None  # built with the app, which answers its control-plane calls

    def drain() -> None:
        """The HTTP server has begun draining (its new requests get 503 shutting_down): gRPC refuses new calls too."""
        if grpc_server is not None:
            grpc_server.drain()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        if poller is not None:
            poller.start()  # its first snapshot precedes the startup load, so a change made meanwhile is picked up
        try:
            await models.load_startup()
            if grpc_server is not None:
                await grpc_server.start()
            if settings.idle_poll_us:
                admission.policy.watchers.append(IdlePoll(asyncio.get_running_loop(), settings.idle_poll_us / 1e6))
            if (activity := worker_activity()) is not None:
                activity.watch(admission.policy)  # its siblings see it busy, and it sees its own count
            readiness.set(True)
            logger.info(
                "ready: serving %s from %s", sorted({m.config.name for m in models.served()}), models.repository
            )
            yield {STATE_KEY: admission, DRAIN_KEY: drain, DIRECT_KEY: direct}
        finally:
            readiness.set(False)
            admission.policy.watchers.clear()
            if grpc_server is not None:
                await grpc_server.stop()
            if poller is not None:
                await poller.stop()
            await models.close()  # uvicorn has already drained the connections: this runs what is still queued
            plane.close()
            logger.info("stopped")

    app = ServiceApp(
        title="cnnserve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Prometheus covers metrics; FastAPI's OpenTelemetry hooks would cost every request an environment lookup.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    # The route table, in matching order.
    routes: tuple[RouteGroup, ...] = (
        v2.InferenceRoutes(plane, settings.max_body_bytes).routes(),
        v2_repository.RepositoryRoutes(models, settings.max_body_bytes).routes(),
        rest.ClassificationRoutes(plane, settings.max_body_bytes).routes(),
        health.HealthRoutes(models, readiness).routes(),
        prometheus.MetricsRoutes(registry).routes(),
    )
    install(app, routes)
    # The request path, outermost first: request id and auth, inference, whole-server answers, then FastAPI.
    inner: ASGIApp = app.framework
    if peers is not None:
        inner = ClusterMiddleware(inner, peers=peers, max_body_bytes=settings.max_body_bytes)
    token = settings.auth_token.get_secret_value() if settings.auth_token else None
    app.hot_routes = hot_routes(routes)
    fast_path = FastPathMiddleware(inner, app.hot_routes)
    app.front = RequestContextMiddleware(fast_path, auth_token=token, access_log=settings.access_log)
    # The same layers for a hot request the front door takes whole (service/http_direct.py).
    direct = DirectAnswers(fast_path, token.encode() if token else None, settings.access_log)
    if settings.grpc_port:
        grpc_server = GrpcServer(settings, plane, admission, readiness, app, shared_port=peers is not None)
    return app


def create_worker_app() -> FastAPI:
    """Factory for uvicorn's worker processes (``--workers N``): settings and logging from the environment."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
