"""REST image classification: raw-body or multipart images in, labelled top-k out; plus TF-Serving style ``:predict``.

Images are decoded and preprocessed off the event loop by the data plane; these handlers only sort out the
media type and shape the JSON.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from service.api.body import read_body
from service.api.client_numbers import whole_number
from service.api.request_info import TIMEOUT, disconnect_probe, timeout_header_us
from service.api.responses import json_response
from service.api.routes import QueryParameter, Responses, Route, RouteGroup
from service.dataplane import DataPlane
from service.errors import BadRequest, UnsupportedMediaType
from service.preprocess import top_k
from service.served_model import ServedModel

Images = list[tuple[str | None, bytes]]
DEFAULT_TOP_K = 5

#: Raw-body media types taken as one image. curl's ``--data-binary`` sends x-www-form-urlencoded by default.
_RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded", "")
_ERRORS: Responses = {
    400: {"description": "Corrupt or truncated image, bad top_k, too many images, malformed multipart or JSON."},
    404: {"description": "Unknown model or version."},
    413: {"description": "Body above CNNSERVE_MAX_BODY_BYTES, or image above CNNSERVE_MAX_IMAGE_PIXELS."},
    415: {"description": "Content-Type is not an image, octet-stream or multipart/form-data."},
    429: {"description": "Queue full; see Retry-After."},
    503: {"description": "Model not ready, or shutting down."},
    504: {"description": "Deadline (X-Request-Timeout-Ms) passed while queued."},
}
_CLASSIFY_BODY = {
    "description": "One image as the raw body (image/jpeg, image/png, image/webp, image/bmp, …), or one or more "
    "images as multipart/form-data file fields (any field name).",
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
    },
}
_TOP_K = QueryParameter(
    "top_k",
    f"How many of the best classes to return per image (default {DEFAULT_TOP_K}, at most the model's classes).",
    {"type": "integer", "minimum": 1, "default": DEFAULT_TOP_K},
)
_PREDICT_BODY = {
    "description": 'TF-Serving / KServe v1 style: {"instances": [{"b64": "<base64 image>"}, …]}; an instance '
    'may also be {"<input name>": {"b64": "…"}}. Answers {"predictions": [[softmax scores], …]}.',
    "content": {"application/json": {"example": {"instances": [{"b64": "iVBORw0KGgo…"}]}}},
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
    """The ``top_k`` query parameter: ``DEFAULT_TOP_K`` (or every class if fewer) when absent, else 1..classes."""
    if raw is None:
        return min(DEFAULT_TOP_K, classes)
    k = whole_number(raw, classes)
    if not k:
        raise BadRequest(
            f"top_k is {raw[:40]!r}, expected a whole number 1..{classes} (the model's classes) in ASCII digits",
            code="bad_top_k",
        )
    return k


def _describe(model: ServedModel) -> dict[str, Any]:
    config = model.config
    return {
        "name": config.name,
        "version": model.version,
        "platform": config.platform,
        "max_batch_size": config.max_batch_size,
        **model.config.tensor_metadata(),
        "preprocessing": config.to_dict()["preprocessing"],
        "labels": list(config.labels),
    }


class ClassificationRoutes:
    """The REST routes, bound to a data plane; classify and predict are fast-path routes.

    Args:
        plane: Runs the requests.
        max_body_bytes: Request bodies above this are refused (413).
    """

    def __init__(self, plane: DataPlane, max_body_bytes: int) -> None:
        self.plane = plane
        self.max_body_bytes = max_body_bytes

    async def list_models(self, request: Request) -> Response:
        """Every served model with its tensors, preprocessing and labels."""
        return json_response({"models": [_describe(m) for m in self.plane.models.served()]})

    async def predict(self, request: Request, model: str, version: str | None) -> Response:
        """Base64 images in a JSON body → softmax scores per instance."""
        arrived = time.monotonic()  # fresh: the loop's clock is cached per iteration
        served = self.plane.model(model, version)
        with self.plane.track(served):
            images = _instances(await read_body(request, self.max_body_bytes))
            deadline = self.plane.deadline(served, arrived, timeout_header_us(request))
            scores = await self.plane.classify_scores(
                served, images, deadline=deadline, is_gone=disconnect_probe(request)
            )
        return json_response({"predictions": scores})

    async def classify(self, request: Request, model: str, version: str | None) -> Response:
        """Raw-body or multipart images → labelled top-k per image."""
        arrived = time.monotonic()  # fresh: the loop's clock is cached per iteration
        served = self.plane.model(model, version)
        config = served.config
        with self.plane.track(served):
            k = _top_k(request.query_params.get("top_k"), config.output[0].dims[-1])
            images = await _images(request, self.max_body_bytes, config.max_batch_size + 1)
            deadline = self.plane.deadline(served, arrived, timeout_header_us(request))
            scores = await self.plane.classify_scores(
                served, images, deadline=deadline, is_gone=disconnect_probe(request)
            )
        predictions = _predictions(scores, k, config.labels)
        results = [{"filename": name, "predictions": p} for (name, _), p in zip(images, predictions, strict=True)]
        return json_response({"model": config.name, "version": served.version, "results": results})

    def routes(self) -> RouteGroup:
        """The REST routes, ':predict' first: Starlette's '{model}' would otherwise swallow 'name:predict'."""
        return RouteGroup(
            "REST classification",
            (
                Route(
                    "GET",
                    "/v1/models",
                    self.list_models,
                    "Served models with their input spec, preprocessing and labels.",
                ),
                Route(
                    "POST",
                    "/v1/models/{model}:predict",
                    self.predict,
                    "TF-Serving style prediction from base64 images: softmax scores per instance.",
                    responses=_ERRORS,
                    body=_PREDICT_BODY,
                    headers=(TIMEOUT,),
                    hot=True,
                    versioned=True,
                ),
                Route(
                    "POST",
                    "/v1/models/{model}/classify",
                    self.classify,
                    "Classify images: top_k labels with softmax scores for each image.",
                    responses=_ERRORS,
                    body=_CLASSIFY_BODY,
                    query=(_TOP_K,),
                    headers=(TIMEOUT,),
                    hot=True,
                    versioned=True,
                ),
            ),
        )
