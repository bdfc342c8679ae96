"""KServe v2 repository extension, as Triton serves it: the repository index, and loading and unloading models.

The model manager does the work; a load that fails on the server's side is a 500 (``model_load_failed``), one whose
request is wrong (``parameters.config``, ``file:`` parameters) a 400.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.api.body import read_body
from service.api.responses import json_response
from service.api.routes import Responses, Route, RouteGroup
from service.errors import BadRequest
from service.model_manager import ModelManager, ModelState

_UNKNOWN_MODEL: Responses = {404: {"description": "Unknown model."}}


class RepositoryRoutes:
    """The v2 repository routes, bound to the model manager.

    Args:
        models: Loads, unloads and indexes the repository's models.
        max_body_bytes: Request bodies above this are refused (413).
    """

    def __init__(self, models: ModelManager, max_body_bytes: int) -> None:
        self.models = models
        self.max_body_bytes = max_body_bytes

    async def _json_object(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object; an empty body counts as ``{}``."""
        body = await read_body(request, self.max_body_bytes)
        if not body.strip():
            return {}
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise BadRequest(f"request body is not valid JSON: {err}") from err
        if not isinstance(value, dict):
            raise BadRequest(f"request body must be a JSON object, got {type(value).__name__}")
        return value

    async def repository_index(self, request: Request) -> Response:
        """Every model in the repository with its state; ``{"ready": true}`` keeps only the ready ones."""
        options = await self._json_object(request)
        return json_response(self.models.index(ready_only=bool(options.get("ready", False))))

    async def load(self, request: Request, model: str) -> Response:
        """Load or reload a model, optionally with the config.json document in ``parameters.config``."""
        params = (await self._json_object(request)).get("parameters") or {}
        if any(key.startswith("file:") for key in params):
            raise BadRequest("loading model files through the request is not supported; put them in the repository")
        override = params.get("config")
        try:
            config = orjson.loads(override) if isinstance(override, str) else override
        except orjson.JSONDecodeError as err:
            raise BadRequest(f"parameters.config is not valid JSON: {err}") from err
        served = await self.models.load(model, override=config)
        return json_response({"name": model, "version": served.version, "state": ModelState.READY})

    async def unload(self, request: Request, model: str) -> Response:
        """Stop serving a model once its queued requests have run."""
        await self._json_object(request)
        await self.models.unload(model)
        return json_response({"name": model, "state": ModelState.UNAVAILABLE})

    def routes(self) -> RouteGroup:
        """Index, load and unload."""
        return RouteGroup(
            "KServe v2",
            (
                Route(
                    "POST",
                    "/v2/repository/index",
                    self.repository_index,
                    "Every model in the repository with its state (READY, …).",
                ),
                Route(
                    "POST",
                    "/v2/repository/models/{model}/load",
                    self.load,
                    "Load or reload a model (optionally with parameters.config); the old version serves until ready.",
                    responses={
                        400: {"description": "Invalid parameters.config, or model files sent in the request."},
                        **_UNKNOWN_MODEL,
                        500: {"description": "The model failed to load (its files, digest, graph or sessions)."},
                    },
                ),
                Route(
                    "POST",
                    "/v2/repository/models/{model}/unload",
                    self.unload,
                    "Unload a model; queued requests still finish.",
                    responses=_UNKNOWN_MODEL,
                ),
            ),
        )
