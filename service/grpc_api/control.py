"""Every RPC but inference, answered by the HTTP route that serves the same request.

Metadata, configuration, statistics and repository control already have one implementation each, behind the HTTP
routes, including what makes several worker processes answer as one server (``service/api/cluster.py``): a
statistics call sums every worker's counts, a load returns once every worker has loaded. Each RPC here becomes that
route's request (its gRPC metadata as headers, so the bearer token and request id apply), runs through the app in
process (``call_app``) and the JSON answer becomes the RPC's message. These calls are rare next to inference, so
the detour costs nothing that matters.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.types import ASGIApp
from tritonclient.grpc import model_config_pb2, service_pb2

from service.api.asgi_call import call_app
from service.errors import BadRequest, NotFound, ServiceError
from service.grpc_api.status import Context, abort
from service.grpc_api.tensors import parameter_value


def _error(status: int, body: bytes) -> ServiceError:
    """The ``ServiceError`` an HTTP error answer (``{"error": …, "code": …}``) stands for."""
    try:
        answer = orjson.loads(body)
        message, code = str(answer["error"]), str(answer["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message, code = body[:300].decode(errors="replace"), "internal"
    err = ServiceError(message, code=code)
    err.status_code = status
    return err


def _model_path(name: str, version: str, suffix: str = "", folder: str = "/v2/models") -> str:
    """``{folder}/{name}[/versions/{version}]{suffix}``, for a name and version that can be path segments."""
    if not name:
        raise BadRequest("model name is empty; name the model")
    if "/" in name or "/" in version:
        raise NotFound(f"unknown model '{name[:64]}' (version '{version[:64]}')")
    return f"{folder}/{name}" + (f"/versions/{version}" if version else "") + suffix


class AppBridge:
    """Puts RPCs to the HTTP app as the requests that answer them.

    Args:
        app: The service's ASGI app, middleware and all.
        server: The gRPC listening address, as an ASGI ``server`` (a TCP one: requests from clients, not siblings).
    """

    def __init__(self, app: ASGIApp, server: tuple[str, int]) -> None:
        self.app = app
        self.server = server

    async def answer(self, context: Context, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """The app's status and body for ``method path`` with ``body`` (JSON) and the RPC's metadata as headers."""
        headers = [
            (key.encode("latin-1"), value.encode("latin-1"))
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str) and not key.startswith(":")
        ]
        raw_body = b"" if body is None else orjson.dumps(body)
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(raw_body)).encode())]
        peer = context.peer() or ""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "2",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": quote(path).encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": (peer, 0),
            "server": self.server,
            "state": {},
        }
        return await call_app(self.app, scope, raw_body)

    async def json(self, context: Context, method: str, path: str, body: Any = None) -> Any:
        """The app's JSON answer; an error answer fails the RPC with its status and message."""
        status, answer = await self.answer(context, method, path, body)
        if status != 200:
            await abort(context, _error(status, answer))
        return orjson.loads(answer) if answer else {}


def _parse(document: Any, message: Message) -> Any:
    """A JSON document (Triton's HTTP form of the message) as the protobuf ``message``; extra fields ignored."""
    return json_format.ParseDict(document, message, ignore_unknown_fields=True)


class ControlPlane:
    """The ``GRPCInferenceService`` RPCs other than inference, each answered by its HTTP route through ``bridge``."""

    bridge: AppBridge

    async def _ready(self, context: Context, path: str, not_ready: tuple[int, ...] = (503,)) -> bool:
        """A readiness route's answer: 200 ready, a ``not_ready`` status not ready; anything else fails the RPC."""
        status, answer = await self.bridge.answer(context, "GET", path)
        if status != 200 and status not in not_ready:
            await abort(context, _error(status, answer))
        return status == 200

    async def ServerLive(self, request: Any, context: Context) -> service_pb2.ServerLiveResponse:  # noqa: N802
        """The process answers: live."""
        return service_pb2.ServerLiveResponse(live=await self._ready(context, "/v2/health/live"))

    async def ServerReady(self, request: Any, context: Context) -> service_pb2.ServerReadyResponse:  # noqa: N802
        """Every worker is ready (models loaded and warm, not draining)."""
        return service_pb2.ServerReadyResponse(ready=await self._ready(context, "/v2/health/ready"))

    async def ModelReady(self, request: Any, context: Context) -> service_pb2.ModelReadyResponse:  # noqa: N802
        """Whether the model (version) serves; an unknown one does not (as Triton answers, and tritonclient's HTTP
        ``is_model_ready`` reads the route's 404)."""
        path = await self._path(context, request.name, request.version, "/ready")
        return service_pb2.ModelReadyResponse(ready=await self._ready(context, path, (404, 503)))

    async def ServerMetadata(self, request: Any, context: Context) -> service_pb2.ServerMetadataResponse:  # noqa: N802
        """Name, version and protocol extensions."""
        return _parse(await self.bridge.json(context, "GET", "/v2"), service_pb2.ServerMetadataResponse())

    async def ModelMetadata(self, request: Any, context: Context) -> service_pb2.ModelMetadataResponse:  # noqa: N802
        """Versions, platform and tensors of a model."""
        path = await self._path(context, request.name, request.version)
        return _parse(await self.bridge.json(context, "GET", path), service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: Context) -> service_pb2.ModelConfigResponse:  # noqa: N802
        """The model's configuration in Triton's vocabulary."""
        path = await self._path(context, request.name, request.version, "/config")
        config = _parse(await self.bridge.json(context, "GET", path), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Context) -> service_pb2.ModelStatisticsResponse:  # noqa: N802
        """Triton statistics of one model (version), or of every model when no name is given: the whole server's."""
        path = "/v2/models/stats"
        if request.name:
            path = await self._path(context, request.name, request.version, "/stats")
        return _parse(await self.bridge.json(context, "GET", path), service_pb2.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: Any, context: Context) -> service_pb2.RepositoryIndexResponse:  # noqa: N802
        """Every model in the repository with its state (one repository: ``repository_name`` is not used)."""
        rows = await self.bridge.json(context, "POST", "/v2/repository/index", {"ready": request.ready})
        return _parse({"models": rows}, service_pb2.RepositoryIndexResponse())

    async def RepositoryModelLoad(self, request: Any, context: Context) -> service_pb2.RepositoryModelLoadResponse:  # noqa: N802
        """Load or reload a model, with its ``config`` parameter; returns once every worker serves it."""
        params = {key: _json_value(value) for key, value in request.parameters.items()}
        path = await self._path(context, request.model_name, "", "/load", "/v2/repository/models")
        await self.bridge.json(context, "POST", path, {"parameters": params})
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Context) -> service_pb2.RepositoryModelUnloadResponse:  # noqa: N802
        """Stop serving a model once its queued requests have run."""
        path = await self._path(context, request.model_name, "", "/unload", "/v2/repository/models")
        await self.bridge.json(context, "POST", path, {})
        return service_pb2.RepositoryModelUnloadResponse()

    async def _path(
        self, context: Context, name: str, version: str, suffix: str = "", folder: str = "/v2/models"
    ) -> str:
        """``_model_path``, failing the RPC for a name that cannot be a model's."""
        try:
            return _model_path(name, version, suffix, folder)
        except ServiceError as err:
            await abort(context, err)


def _json_value(parameter: service_pb2.ModelRepositoryParameter) -> Any:
    """A repository parameter as the HTTP API's JSON carries it: bytes (model files) as base64."""
    value = parameter_value(parameter)
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value
