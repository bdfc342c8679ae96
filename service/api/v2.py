"""KServe v2 / Open Inference Protocol routes, as Triton serves them: server and model metadata, config, stats, infer.

Handlers stay a few lines: parse (``v2_codec``) → ``DataPlane.infer`` → encode. Errors are ``{"error": "…"}``.
Repository control (index, load, unload) is in ``v2_repository``.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from service import __version__
from service.api.body import read_body
from service.api.client_numbers import whole_number
from service.api.request_info import TIMEOUT, disconnect_probe, header, timeout_header_us
from service.api.responses import JSON, OCTET_STREAM, BytesResponse, json_response
from service.api.routes import HeaderParameter, Responses, Route, RouteGroup
from service.api.v2_codec import encode_infer_response, parse_infer_request
from service.dataplane import DataPlane
from service.errors import BadRequest

_MAX_HEADER_LENGTH = 2**63 - 1
_HEADER_LENGTH = HeaderParameter(
    "Inference-Header-Content-Length",
    "Binary tensor data extension: the length in bytes of the JSON header that starts the body; the raw tensor "
    "bytes follow it. Absent: the whole body is JSON.",
    {"type": "integer", "minimum": 1},
)
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "statistics"]

_ERRORS: Responses = {
    400: {"description": "Malformed request: JSON, binary header, tensor name/shape/datatype/size, parameter."},
    404: {"description": "Unknown model or version."},
    413: {"description": "Body larger than CNNSERVE_MAX_BODY_BYTES."},
    429: {"description": "Queue full; see Retry-After."},
    503: {"description": "Model not ready, or shutting down."},
    504: {"description": "Deadline passed while queued; the request did not run."},
}
_INFER_BODY = {
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


def _header_length(request: Request) -> int | None:
    """``Inference-Header-Content-Length``, or None when absent.

    Bounded here only to stay a machine integer: the codec checks it against the body, naming the body's length.
    """
    raw = header(request, b"inference-header-content-length")
    if raw is None:
        return None
    length = whole_number(raw, _MAX_HEADER_LENGTH)
    if length is None:
        raise BadRequest(
            f"Inference-Header-Content-Length is {raw[:40]!r}, expected the JSON header's length in bytes, "
            "a whole number in ASCII digits"
        )
    return length


class InferenceRoutes:
    """The v2 metadata, statistics and inference routes, bound to a data plane; infer is a fast-path route.

    Args:
        plane: Runs the requests.
        max_body_bytes: Request bodies above this are refused (413).
    """

    def __init__(self, plane: DataPlane, max_body_bytes: int) -> None:
        self.plane = plane
        self.max_body_bytes = max_body_bytes

    async def server_metadata(self, request: Request) -> Response:
        """The server's name, version and protocol extensions."""
        return json_response({"name": "cnnserve", "version": __version__, "extensions": EXTENSIONS})

    async def all_stats(self, request: Request) -> Response:
        """Triton statistics of every served model."""
        stats = [m.metrics.stats.to_triton(m.config.name, m.version) for m in self.plane.models.served()]
        return json_response({"model_stats": stats})

    async def model_metadata(self, request: Request, model: str, version: str | None) -> Response:
        """One model's versions, platform and tensors."""
        served = self.plane.model(model, version)
        config = served.config
        versions = self.plane.models.versions(config.name)
        metadata = {"name": config.name, "versions": versions, "platform": config.platform}
        return json_response(metadata | served.config.tensor_metadata())

    async def model_config(self, request: Request, model: str, version: str | None) -> Response:
        """One model's configuration, in Triton's vocabulary."""
        return json_response(self.plane.model(model, version).config.triton_config())

    async def model_stats(self, request: Request, model: str, version: str | None) -> Response:
        """One version's Triton statistics; without a version, every served version's (as Triton answers)."""
        served = self.plane.model(model, version)
        name = served.config.name
        chosen = [served] if version else [m for m in self.plane.models.served() if m.config.name == name]
        return json_response({"model_stats": [m.metrics.stats.to_triton(name, m.version) for m in chosen]})

    async def infer(self, request: Request, model: str, version: str | None) -> Response:
        """A v2 inference request (JSON or binary tensors) → the outputs it asks for."""
        arrived = time.monotonic()  # fresh: the loop's clock is cached per iteration
        plane, served = self.plane, self.plane.model(model, version)
        with plane.track(served), served.batcher.announce() as arrival:
            body = await read_body(request, self.max_body_bytes)
            parsed = parse_infer_request(body, _header_length(request), served.signature)
            timeout_us, header_us = parsed.timeout_us, timeout_header_us(request)
            if header_us and (not timeout_us or header_us < timeout_us):
                timeout_us = header_us
            deadline = plane.deadline(served, arrived, timeout_us)
            outputs = await plane.infer(
                served,
                parsed.inputs,
                parsed.rows,
                deadline=deadline,
                is_gone=disconnect_probe(request),
                arrival=arrival,
            )
            content, header_length = encode_infer_response(
                served.config.name, served.version, parsed.id, outputs, parsed.outputs, served.config.labels
            )
        if header_length is None:
            return BytesResponse(content, JSON)
        return BytesResponse(content, OCTET_STREAM, extra=[(b"inference-header-content-length", b"%d" % header_length)])

    def routes(self) -> RouteGroup:
        """'/v2/models/stats' comes before '/v2/models/{model}', which would take 'stats' for a model name."""
        return RouteGroup(
            "KServe v2",
            (
                Route("GET", "/v2", self.server_metadata, "Server metadata: name, version, protocol extensions."),
                Route("GET", "/v2/models/stats", self.all_stats, "Triton inference statistics of every served model."),
                Route(
                    "GET",
                    "/v2/models/{model}",
                    self.model_metadata,
                    "Model metadata: versions, platform, inputs and outputs (batch axis -1).",
                    responses=_ERRORS,
                    versioned=True,
                ),
                Route(
                    "GET",
                    "/v2/models/{model}/config",
                    self.model_config,
                    "Triton model configuration (config.json in Triton's vocabulary).",
                    responses=_ERRORS,
                    versioned=True,
                ),
                Route(
                    "GET",
                    "/v2/models/{model}/stats",
                    self.model_stats,
                    "Triton inference statistics (success/fail/queue/compute, batch_stats).",
                    responses=_ERRORS,
                    versioned=True,
                ),
                Route(
                    "POST",
                    "/v2/models/{model}/infer",
                    self.infer,
                    "Run inference: JSON tensors or the binary tensor data extension.",
                    responses=_ERRORS,
                    body=_INFER_BODY,
                    headers=(TIMEOUT, _HEADER_LENGTH),
                    hot=True,
                    versioned=True,
                ),
            ),
        )
