"""Helpers every handler shares: bounded body reading (with Content-Encoding), timeouts, disconnect probes, JSON.

Kept free of per-request allocation beyond what each step needs: handlers here are the hot path.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service.errors import BadRequest, ClientClosedRequest, PayloadTooLarge, UnsupportedMediaType

TIMEOUT_HEADER = "x-request-timeout-ms"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response rendered by orjson (numpy arrays allowed)."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )


def _too_large(size: int, limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is {size} bytes, the limit is {limit} bytes (CNNSERVE_MAX_BODY_BYTES)", code="body_too_large"
    )


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"Content-Encoding '{encoding}' is not supported; send gzip, deflate or identity",
            code="unsupported_encoding",
        )
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(body, limit + 1)  # bounded: a zip bomb stops at limit + 1 bytes
    except zlib.error as err:
        raise BadRequest(f"body is not valid {encoding} data ({err})", code="bad_encoding") from err
    if len(out) > limit:
        raise _too_large(len(out), limit, "decompressed body (at least)")
    if not decoder.eof:
        raise BadRequest(f"{encoding} body is truncated: the compressed stream does not end", code="bad_encoding")
    return out


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes, decompressed if encoded.

    Raises:
        PayloadTooLarge: declared or actual size (compressed or not) above ``limit``.
        UnsupportedMediaType / BadRequest: unknown or broken Content-Encoding.
        ClientClosedRequest: the client went away mid-upload.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit, "body")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit, "body (at least)")
            chunks.append(chunk)
    except ClientDisconnect as err:
        raise ClientClosedRequest("client disconnected while sending the body") from err
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    return body if encoding == "identity" else _decompress(body, encoding, limit)


def timeout_header_us(request: Request) -> int | None:
    """``X-Request-Timeout-Ms`` in microseconds, or None when absent.

    Raises:
        BadRequest: the header is not a non-negative number.
    """
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms >= 0:  # also rejects NaN
        raise BadRequest(f"X-Request-Timeout-Ms is {raw!r}, expected a number of milliseconds >= 0", code="bad_timeout")
    return int(ms * 1000)


def disconnect_probe(request: Request) -> Callable[[], bool] | None:
    """A zero-cost check of whether the client has gone, for the batcher to consult before running a request.

    Uvicorn marks its request cycle ``disconnected`` when the connection drops; its ``receive`` is a bound method
    of that cycle. Under another server the probe is unavailable and queued work simply runs.
    """
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)


_VERSION_PARAMETER = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": "Model version; only the latest (served) version is accepted.",
    "schema": {"type": "string"},
}


def route_docs(
    prefix: str, extra: dict[str, Any] | None = None, query: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """OpenAPI extras for a route, documenting ``{version}`` when the path has one, and query parameters.

    Handlers read the version and query parameters from the request instead of declaring them (the fast path
    calls them without FastAPI), so the documentation is declared here.
    """
    docs = dict(extra or {})
    parameters = ([_VERSION_PARAMETER] if "{version}" in prefix else []) + (query or [])
    if parameters:
        docs["parameters"] = parameters
    return docs or None


def path_version(request: Request) -> str | None:
    """The ``{version}`` path segment, or None on unversioned routes."""
    return request.path_params.get("version")
