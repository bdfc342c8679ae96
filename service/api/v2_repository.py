"""KServe v2 repository extension, as Triton serves it: the repository index, and loading and unloading models.

The model manager does the work; a load that fails on the server's side is a 500 (``model_load_failed``), one whose
request is wrong (``parameters.config``, ``file:`` parameters) a 400. Load and unload answer only in the ``explicit``
model control mode (``CNNSERVE_MODEL_CONTROL``); otherwise they are 403, before the body is read. The index answers
in every mode.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.api.body import read_body
from service.api.responses import json_response
from service.api.routes import Responses, Route, RouteGroup
from service.errors import BadRequest, Forbidden
from service.model_manager import ModelManager, ModelState

_CONTROL: Responses = {
    403: {"description": "Repository control is off: CNNSERVE_MODEL_CONTROL is not 'explicit'."},
    404: {"description": "Unknown model."},
}
_REFUSAL = {
    "none": "so what is served changes only when the operator restarts the server",
    "poll": "so the server follows the repository folder: change the folder instead",
}


class RepositoryRoutes:
    """The v2 repository routes, bound to the model manager.

    Args:
        models: Loads, unloads and indexes the repository's models.
        max_body_bytes: Request bodies above this are refused (413).
    """

    def __init__(self, models: ModelManager, max_body_bytes: int) -> None:
        self.models = models
        self.max_body_bytes = max_body_bytes
        self.control = models.settings.model_control

    def _check_control(self) -> None:
        """Only the ``explicit`` mode lets a client change what is served (Triton's ``--model-control-mode``)."""
        if self.control != "explicit":
            raise Forbidden(
                f"repository control through the API is disabled: CNNSERVE_MODEL_CONTROL is '{self.control}', "
                f"{_REFUSAL[self.control]}; the operator may set it to 'explicit' to allow load and unload",
                code="model_control_disabled",
            )

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
        self._check_control()
        params = (await self._json_object(request)).get("parameters") or {}
        if any(key.startswith("file:") for key in params):
            raise BadRequest("loading model files through the request is not supported; put them in the repository")
        override = params.get("config")
        try:
            config = orjson.loads(override) if isinstance(override, str) else override
        except orjson.JSONDecodeError as err:
            raise BadRequest(f"parameters.config is not valid JSON: {err}") from err
        served = await self.models.load(model, override=config)
        return json_response({"name": model, "version": served.newest.version, "state": ModelState.READY})

    async def unload(self, request: Request, model: str) -> Response:
        """Stop serving a model once its queued requests have run."""
        self._check_control()
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
                        **_CONTROL,
                        500: {"description": "The model failed to load (its files, digest, graph or sessions)."},
                    },
                ),
                Route(
                    "POST",
                    "/v2/repository/models/{model}/unload",
                    self.unload,
                    "Unload a model; queued requests still finish.",
                    responses=_CONTROL,
                ),
            ),
        )
