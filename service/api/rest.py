"""REST image classification: raw-body or multipart images in, labelled top-k out; plus TF-Serving style ``:predict``.

Images are decoded and preprocessed off the event loop by the data plane; these handlers only sort out the
media type and shape the JSON.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from service.api.common import disconnect_probe, json_response, path_version, read_body, route_docs, timeout_header_us
from service.api.fastpath import HotRoute, RouteSet
from service.dataplane import DataPlane
from service.errors import BadRequest, UnsupportedMediaType
from service.preprocess import top_k
from service.registry import ServedModel

Images = list[tuple[str | None, bytes]]
DEFAULT_TOP_K = 5

#: Raw-body media types taken as one image. curl's ``--data-binary`` sends x-www-form-urlencoded by default.
_RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded", "")
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Corrupt or truncated image, bad top_k, too many images, malformed multipart or JSON."},
    404: {"description": "Unknown model or version."},
    413: {"description": "Body above CNNSERVE_MAX_BODY_BYTES, or image above CNNSERVE_MAX_IMAGE_PIXELS."},
    415: {"description": "Content-Type is not an image, octet-stream or multipart/form-data."},
    429: {"description": "Queue full; see Retry-After."},
    503: {"description": "Model not ready, or shutting down."},
    504: {"description": "Deadline (X-Request-Timeout-Ms) passed while queued."},
}
_CLASSIFY_BODY = {
    "requestBody": {
        "description": "One image as the raw body (image/jpeg, image/png, image/webp, image/bmp, …), or one or more "
        "images as multipart/form-data file fields (any field name).",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}
_TOP_K_PARAMETER = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "description": f"How many of the best classes to return per image (default {5}, at most the model's classes).",
    "schema": {"type": "integer", "minimum": 1, "default": 5},
}
_PREDICT_BODY = {
    "requestBody": {
        "description": 'TF-Serving / KServe v1 style: {"instances": [{"b64": "<base64 image>"}, …]}; an instance '
        'may also be {"<input name>": {"b64": "…"}}. Answers {"predictions": [[softmax scores], …]}.',
        "content": {"application/json": {"example": {"instances": [{"b64": "iVBORw0KGgo…"}]}}},
    }
}


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def _multipart(request: Request, body: bytes, max_files: int) -> Images:
    parser = MultiPartParser(request.headers, _once(body), max_files=max_files, max_part_size=len(body) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise BadRequest(f"malformed multipart/form-data body: {err.message}", code="bad_multipart") from err
    try:
        return [(f.filename, await f.read()) for _, f in form.multi_items() if isinstance(f, UploadFile)]
    finally:
        await form.close()


async def _images(request: Request, limit: int, max_files: int) -> Images:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not media_type.startswith("image/") and media_type not in _RAW_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{media_type}' is not accepted; send one image as the body (image/jpeg, image/png, "
            "image/webp, image/bmp, … or application/octet-stream) or images as multipart/form-data files"
            + ("; for JSON with base64 images use POST /v1/models/{model}:predict" if "json" in media_type else "")
        )
    body = await read_body(request, limit)
    if media_type == "multipart/form-data":
        return await _multipart(request, body, max_files)
    return [(None, body)]


def _instances(body: bytes) -> Images:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"request body is not valid JSON: {err}") from err
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list):
        raise BadRequest('expected {"instances": [{"b64": "<base64 image>"}, …]}')
    images: Images = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and len(instance) == 1 and "b64" not in instance:
            instance = next(iter(instance.values()))  # {"image_bytes": {"b64": …}}
        encoded = instance.get("b64") if isinstance(instance, dict) else None
        if not isinstance(encoded, str):
            raise BadRequest(f'instances[{i}] must be {{"b64": "<base64 image>"}}, got {str(instance)[:80]}')
        try:
            images.append((f"instances[{i}]", base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError) as err:
            raise BadRequest(f"instances[{i}].b64 is not valid base64 ({err})") from err
    return images


def _predictions(scores: npt.NDArray[np.float32], k: int, labels: tuple[str, ...]) -> list[list[dict[str, Any]]]:
    indices, values = top_k(scores, k)
    return [
        [
            {"label": labels[i] if labels else str(i), "index": int(i), "score": float(v)}
            for i, v in zip(ri, rv, strict=True)
        ]
        for ri, rv in zip(indices, values, strict=True)
    ]


def _top_k(raw: str | None, classes: int) -> int:
    """The ``top_k`` query parameter: default 5 (or every class if fewer), 1..classes."""
    if raw is None:
        return min(DEFAULT_TOP_K, classes)
    k = int(raw) if raw.isdigit() else 0
    if not 1 <= k <= classes:
        raise BadRequest(
            f"top_k is {raw!r}, expected a whole number 1..{classes} (the model's classes)", code="bad_top_k"
        )
    return k


def _describe(model: ServedModel) -> dict[str, Any]:
    config = model.config
    return {
        "name": config.name,
        "version": model.version,
        "platform": config.platform,
        "max_batch_size": config.max_batch_size,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]} for t in config.input],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]} for t in config.output],
        "preprocessing": config.to_dict()["preprocessing"],
        "labels": list(config.labels),
    }


def build_router(plane: DataPlane, max_body_bytes: int) -> RouteSet:
    """The REST routes bound to a data plane; classify and predict are also fast-path routes."""
    router = APIRouter(tags=["REST classification"])

    @router.get("/v1/models", summary="Served models with their input spec, preprocessing and labels.")
    async def list_models() -> Response:
        return json_response({"models": [_describe(m) for m in plane.registry.served()]})

    async def predict(request: Request, model: str) -> Response:
        arrived = asyncio.get_running_loop().time()
        served = plane.model(model, path_version(request))
        with plane.track(served):
            images = _instances(await read_body(request, max_body_bytes))
            deadline = plane.deadline(served, arrived, timeout_header_us(request))
            scores = await plane.classify_scores(served, images, deadline=deadline, is_gone=disconnect_probe(request))
        return json_response({"predictions": scores})

    async def classify(request: Request, model: str) -> Response:
        arrived = asyncio.get_running_loop().time()
        served = plane.model(model, path_version(request))
        classes = served.config.output[0].dims[-1]
        with plane.track(served):
            top_k = _top_k(request.query_params.get("top_k"), classes)
            images = await _images(request, max_body_bytes, served.config.max_batch_size + 1)
            deadline = plane.deadline(served, arrived, timeout_header_us(request))
            scores = await plane.classify_scores(served, images, deadline=deadline, is_gone=disconnect_probe(request))
        predictions = _predictions(scores, top_k, served.config.labels)
        results = [{"filename": name, "predictions": p} for (name, _), p in zip(images, predictions, strict=True)]
        return json_response({"model": served.config.name, "version": served.version, "results": results})

    # ':predict' routes first: '{model}' would otherwise swallow 'name:predict' on other patterns.
    for prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
        router.add_api_route(
            prefix + ":predict",
            predict,
            methods=["POST"],
            summary="TF-Serving style prediction from base64 images: softmax scores per instance.",
            responses=_ERRORS,
            openapi_extra=route_docs(prefix, _PREDICT_BODY),
        )
    for prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
        router.add_api_route(
            prefix + "/classify",
            classify,
            methods=["POST"],
            summary="Classify images: top_k labels with softmax scores for each image.",
            responses=_ERRORS,
            openapi_extra=route_docs(prefix, _CLASSIFY_BODY, query=[_TOP_K_PARAMETER]),
        )
    return RouteSet(
        router,
        (
            HotRoute.for_template("/v1/models/{model}:predict", predict),
            HotRoute.for_template("/v1/models/{model}/classify", classify),
        ),
    )
