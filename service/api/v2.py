"""KServe v2 / Open Inference Protocol routes, as Triton serves them: metadata, config, stats, repository, infer.

Handlers stay a few lines: parse (``v2_codec``) → ``DataPlane.infer`` → encode. Errors are ``{"error": "…"}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service import __version__
from service.api.common import disconnect_probe, json_response, path_version, read_body, route_docs, timeout_header_us
from service.api.fastpath import HotRoute, RouteSet
from service.api.v2_codec import encode_infer_response, parse_infer_request
from service.dataplane import DataPlane
from service.errors import BadRequest
from service.registry import ServedModel

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "statistics"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request: JSON, binary header, tensor name/shape/datatype/size, parameter."},
    404: {"description": "Unknown model or version."},
    413: {"description": "Body larger than CNNSERVE_MAX_BODY_BYTES."},
    429: {"description": "Queue full; see Retry-After."},
    503: {"description": "Model not ready, or shutting down."},
    504: {"description": "Deadline passed while queued; the request did not run."},
}
_INFER_BODY = {
    "requestBody": {
        "description": (
            "A v2 inference request. JSON tensors: `data` holds the values. Binary extension: send the JSON header, "
            "then the raw little-endian tensor bytes, with `Inference-Header-Content-Length` giving the header's "
            "length and each input's `parameters.binary_data_size` its bytes. `parameters.timeout` (microseconds) "
            "bounds the queue wait; `parameters.binary_data_output` or per-output `parameters.binary_data` return "
            "binary outputs; per-output `parameters.classification: k` returns the top k as `value:index:label`."
        ),
        "content": {
            "application/json": {
                "example": {"inputs": [{"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.0]}]}
            },
            "application/octet-stream": {},
        },
    }
}


def _metadata(model: ServedModel) -> dict[str, Any]:
    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]} for t in specs]

    config = model.config
    return {
        "name": config.name,
        "versions": [model.version],
        "platform": config.platform,
        "inputs": tensors(config.input),
        "outputs": tensors(config.output),
    }


def _header_length(request: Request) -> int | None:
    raw = request.headers.get("inference-header-content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"Inference-Header-Content-Length is {raw!r}, expected the JSON header's length in bytes")
    return int(raw)


async def _json_object(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"request body is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(value).__name__}")
    return value


def build_router(plane: DataPlane, max_body_bytes: int) -> RouteSet:
    """The v2 routes bound to a data plane; infer is also a fast-path route."""
    router = APIRouter(tags=["KServe v2"])
    registry = plane.registry

    @router.get("/v2", summary="Server metadata: name, version, protocol extensions.")
    async def server_metadata() -> Response:
        return json_response({"name": "cnnserve", "version": __version__, "extensions": EXTENSIONS})

    @router.get("/v2/models/stats", summary="Triton inference statistics of every served model.")
    async def all_stats() -> Response:
        stats = [m.metrics.stats.to_triton(m.config.name, m.version) for m in registry.served()]
        return json_response({"model_stats": stats})

    async def model_metadata(request: Request, model: str) -> Response:
        return json_response(_metadata(plane.model(model, path_version(request))))

    async def model_config(request: Request, model: str) -> Response:
        return json_response(plane.model(model, path_version(request)).config.triton_config())

    async def model_stats(request: Request, model: str) -> Response:
        served = plane.model(model, path_version(request))
        return json_response({"model_stats": [served.metrics.stats.to_triton(served.config.name, served.version)]})

    async def infer(request: Request, model: str) -> Response:
        arrived = asyncio.get_running_loop().time()
        served = plane.model(model, path_version(request))
        with plane.track(served), served.batcher.announce() as arrival:
            body = await read_body(request, max_body_bytes)
            parsed = parse_infer_request(body, _header_length(request), served.signature)
            timeouts = [t for t in (parsed.timeout_us, timeout_header_us(request)) if t]
            outputs = await plane.infer(
                served,
                parsed.inputs,
                parsed.rows,
                deadline=plane.deadline(served, arrived, min(timeouts, default=None)),
                is_gone=disconnect_probe(request),
                arrival=arrival,
            )
            content, header_length = encode_infer_response(
                served.config.name, served.version, parsed.id, outputs, parsed.outputs, served.config.labels
            )
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    for suffix, endpoint, summary, extra in (
        ("", model_metadata, "Model metadata: versions, platform, inputs and outputs (batch axis -1).", {}),
        ("/config", model_config, "Triton model configuration (config.json in Triton's vocabulary).", {}),
        ("/stats", model_stats, "Triton inference statistics (success/fail/queue/compute, batch_stats).", {}),
        ("/infer", infer, "Run inference: JSON tensors or the binary tensor data extension.", _INFER_BODY),
    ):
        method = "POST" if suffix == "/infer" else "GET"
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            router.add_api_route(
                prefix + suffix,
                endpoint,
                methods=[method],
                summary=summary,
                responses=_ERRORS,
                openapi_extra=route_docs(prefix, extra),
            )

    @router.post("/v2/repository/index", summary="Every model in the repository with its state (READY, …).")
    async def repository_index(request: Request) -> Response:
        options = await _json_object(request, max_body_bytes)
        return json_response(registry.index(ready_only=bool(options.get("ready", False))))

    @router.post(
        "/v2/repository/models/{model}/load",
        summary="Load or reload a model (optionally with parameters.config); the old version serves until ready.",
        responses={400: {"description": "The model failed validation or loading."}, 404: _ERRORS[404]},
    )
    async def load(request: Request, model: str) -> Response:
        params = (await _json_object(request, max_body_bytes)).get("parameters") or {}
        if any(key.startswith("file:") for key in params):
            raise BadRequest("loading model files through the request is not supported; put them in the repository")
        override = params.get("config")
        try:
            config = orjson.loads(override) if isinstance(override, str) else override
        except orjson.JSONDecodeError as err:
            raise BadRequest(f"parameters.config is not valid JSON: {err}") from err
        served = await registry.load(model, override=config)
        return json_response({"name": model, "version": served.version, "state": "READY"})

    @router.post("/v2/repository/models/{model}/unload", summary="Unload a model; queued requests still finish.")
    async def unload(request: Request, model: str) -> Response:
        await _json_object(request, max_body_bytes)
        await registry.unload(model)
        return json_response({"name": model, "state": "UNAVAILABLE"})

    return RouteSet(router, (HotRoute.for_template("/v2/models/{model}/infer", infer),))
