"""REST image classification: raw-body or multipart images in, labelled top-k out; plus KServe v1 ``:predict``.

Images are decoded and preprocessed off the event loop by the data plane; these handlers only sort out the
media type and shape the JSON. ``classify`` and ``:predict`` take their images differently and answer the same
labelled top-k per image, made by one function (``_labelled``), each in its protocol's envelope.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.requests import Request
from starlette.responses import Response

from service.api.body import read_body
from service.api.client_numbers import whole_number
from service.api.request_info import TIMEOUT, disconnect_probe, timeout_header_us
from service.api.responses import json_response
from service.api.rest_bodies import Images, read_images, read_instances
from service.api.routes import QueryParameter, Responses, Route, RouteGroup
from service.dataplane import DataPlane
from service.errors import BadRequest
from service.preprocess import top_k
from service.served_model import ServedModel

Predictions = list[list[dict[str, Any]]]
DEFAULT_TOP_K = 5

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
    "description": 'KServe v1 / TF-Serving style: {"instances": [{"b64": "<base64 image>"}, …], "top_k": 5}; an '
    'instance may also be {"<input name>": {"b64": "…"}}; top_k (optional) as in the query, which it must match '
    'when both are given. Answers {"model", "version", "predictions": [[{"label", "index", "score"}, …], …]}: '
    "classify's top-k per instance, in order.",
    "content": {"application/json": {"example": {"instances": [{"b64": "iVBORw0KGgo…"}], "top_k": 3}}},
}


def _predictions(scores: npt.NDArray[np.float32], k: int, labels: tuple[str, ...]) -> Predictions:
    indices, values = top_k(scores, k)
    return [
        [{"label": labels[i] if labels else str(i), "index": i, "score": v} for i, v in zip(ri, rv, strict=True)]
        for ri, rv in zip(indices.tolist(), values.tolist(), strict=True)  # Python ints and floats in one call
    ]


def _top_k(raw: str | None, classes: int, body: str | None = None) -> int:
    """``top_k`` from the query (and ``:predict``'s body): ``DEFAULT_TOP_K`` (or every class if fewer) when absent,
    else 1..classes; given in both places, the two must agree rather than one silently win."""
    given = [text for text in (raw, body) if text is not None]
    if not given:
        return min(DEFAULT_TOP_K, classes)
    values = set()
    for text in given:
        k = whole_number(text, classes)
        if not k:
            raise BadRequest(
                f"top_k is {text[:40]!r}, expected a whole number 1..{classes} (the model's classes) in ASCII digits",
                code="bad_top_k",
            )
        values.add(k)
    if len(values) > 1:
        raise BadRequest(f"top_k is {raw} in the query but {body} in the body; give one", code="bad_top_k")
    return values.pop()


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

    async def _labelled(
        self, request: Request, model: str, version: str | None, json_body: bool
    ) -> tuple[ServedModel, Images, Predictions]:
        """What both routes answer: the labelled top-k of each image, from a ``:predict`` JSON body or not."""
        arrived = time.monotonic()  # fresh: the loop's clock is cached per iteration
        served = self.plane.model(model, version)
        config = served.config
        with self.plane.track(served):
            query_k, classes = request.query_params.get("top_k"), config.output[0].dims[-1]
            if json_body:
                images, body_k = read_instances(await read_body(request, self.max_body_bytes))
                k = _top_k(query_k, classes, body_k)
            else:  # a bad top_k is refused before the body is read
                k = _top_k(query_k, classes)
                images = await read_images(request, self.max_body_bytes, config.max_batch_size + 1)
            deadline = self.plane.deadline(served, arrived, timeout_header_us(request))
            scores = await self.plane.classify_scores(
                served, images, deadline=deadline, is_gone=disconnect_probe(request)
            )
        return served, images, _predictions(scores, k, config.labels)

    async def predict(self, request: Request, model: str, version: str | None) -> Response:
        """Base64 images in a JSON body → labelled top-k per instance, in KServe v1's ``predictions``."""
        served, _, predictions = await self._labelled(request, model, version, json_body=True)
        return json_response({"model": served.config.name, "version": served.version, "predictions": predictions})

    async def classify(self, request: Request, model: str, version: str | None) -> Response:
        """Raw-body or multipart images → labelled top-k per image."""
        served, images, predictions = await self._labelled(request, model, version, json_body=False)
        results = [{"filename": name, "predictions": p} for (name, _), p in zip(images, predictions, strict=True)]
        return json_response({"model": served.config.name, "version": served.version, "results": results})

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
                    "KServe v1 prediction from base64 images: top_k labels with softmax scores per instance.",
                    responses=_ERRORS,
                    body=_PREDICT_BODY,
                    query=(_TOP_K,),
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
