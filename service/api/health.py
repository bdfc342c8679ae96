"""Health endpoints (KServe v2): server liveness and readiness, per-model readiness. Never need a token."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from service.api.responses import json_response
from service.api.routes import Route, RouteGroup
from service.errors import ServiceError
from service.model_manager import ModelManager
from service.peers import Peers


@dataclass
class Readiness:
    """Server readiness: true between the end of startup (models loaded and warm) and the start of shutdown.

    With sibling workers (``peers``), the server is ready only while every worker is.
    """

    peers: Peers | None = None
    ready: bool = False

    def set(self, ready: bool) -> None:
        """This worker's readiness, told to its siblings too."""
        self.ready = ready
        if self.peers is not None:
            self.peers.mark_ready(ready)

    def server_ready(self) -> bool:
        """Whether this worker, and every sibling, is ready."""
        return self.ready and (self.peers is None or self.peers.all_ready())


class HealthRoutes:
    """The health routes, bound to the model manager and the readiness flag."""

    def __init__(self, models: ModelManager, readiness: Readiness) -> None:
        self.models = models
        self.readiness = readiness

    async def live(self, request: Request) -> Response:
        """Always 200 while the process runs."""
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        """200 between startup and shutdown (of every worker), 503 otherwise."""
        ready = self.readiness.server_ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def model_ready(self, request: Request, model: str, version: str | None) -> Response:
        """200 when the model serves, 503 when it exists but does not (yet), 404 when it is unknown."""
        try:
            self.models.get(model, version)
        except ServiceError as err:
            if err.status_code == 404:
                raise
            return json_response({"name": model, "ready": False}, 503)
        return json_response({"name": model, "ready": True})

    def routes(self) -> RouteGroup:
        """Server liveness and readiness, per-model readiness."""
        return RouteGroup(
            "health",
            (
                Route("GET", "/v2/health/live", self.live, "Server is alive (200 while the process runs)."),
                Route(
                    "GET",
                    "/v2/health/ready",
                    self.ready,
                    "Server is ready: 200 once every startup model is loaded and warm, 503 before and while draining.",
                    responses={503: {"description": "Starting up or shutting down."}},
                ),
                Route(
                    "GET",
                    "/v2/models/{model}/ready",
                    self.model_ready,
                    "Model is ready to serve (200), not ready (503) or unknown (404).",
                    responses={
                        503: {"description": "Loading, unloaded or failed."},
                        404: {"description": "Unknown model."},
                    },
                    versioned=True,
                ),
            ),
        )
