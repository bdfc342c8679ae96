"""Reading a request body: bounded by the body limit as it streams in, then decompressed (Content-Encoding).

A zip bomb stops at the limit too: decompression never produces more than ``limit + 1`` bytes.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from service.api.client_numbers import whole_number
from service.api.request_info import header
from service.errors import BadRequest, ClientClosedRequest, PayloadTooLarge, UnsupportedMediaType

_SHOWN_DIGITS = 20  # a declared size longer than this is not quoted in full
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _too_large(size: int | str, limit: int, what: str) -> PayloadTooLarge:
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
    body = await read_raw_body(request, limit)
    encoding = (header(request, b"content-encoding") or "identity").strip().lower()
    return body if encoding == "identity" else _decompress(body, encoding, limit)


async def read_raw_body(request: Request, limit: int) -> bytes:
    """The request body as it came (still encoded), refused with 413 as soon as it passes ``limit`` bytes.

    Raises:
        PayloadTooLarge: declared or actual size above ``limit``.
        ClientClosedRequest: the client went away mid-upload.
    """
    declared = header(request, b"content-length")
    # The HTTP server frames the body by Content-Length and refuses one that is not digits; the stream is bounded
    # below regardless, so only a well-formed declaration above the limit is refused before reading.
    if declared is not None and declared.isascii() and declared.isdigit() and whole_number(declared, limit) is None:
        digits = declared.lstrip("0")
        raise _too_large(digits if len(digits) <= _SHOWN_DIGITS else f"more than 10^{_SHOWN_DIGITS}", limit, "body")
    # The ASGI messages are read directly: Starlette's ``request.stream()`` is an async generator that costs a
    # few microseconds a request, several percent of a tiny model's whole request.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest("client disconnected while sending the body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, "body (at least)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
