"""Health endpoints (KServe v2): server liveness and readiness, per-model readiness. Never need a token."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.common import json_response, path_version, route_docs
from service.errors import ServiceError
from service.registry import ModelRegistry


@dataclass
class Readiness:
    """Server readiness: true between the end of startup (models loaded and warm) and the start of shutdown."""

    ready: bool = False


def build_router(registry: ModelRegistry, readiness: Readiness) -> APIRouter:
    """The health routes, bound to the registry and the readiness flag."""
    router = APIRouter(tags=["health"])

    @router.get("/v2/health/live", summary="Server is alive (200 while the process runs).")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get(
        "/v2/health/ready",
        summary="Server is ready: 200 once every startup model is loaded and warm, 503 before and while draining.",
        responses={503: {"description": "Starting up or shutting down."}},
    )
    async def ready() -> Response:
        return json_response({"ready": readiness.ready}, 200 if readiness.ready else 503)

    async def model_ready(request: Request, model: str) -> Response:
        try:
            registry.get(model, path_version(request))
        except ServiceError as err:
            if err.status_code == 404:
                raise
            return json_response({"name": model, "ready": False}, 503)
        return json_response({"name": model, "ready": True})

    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        router.add_api_route(
            prefix + "/ready",
            model_ready,
            methods=["GET"],
            summary="Model is ready to serve (200), not ready (503) or unknown (404).",
            responses={503: {"description": "Loading, unloaded or failed."}, 404: {"description": "Unknown model."}},
            openapi_extra=route_docs(prefix),
        )
    return router
