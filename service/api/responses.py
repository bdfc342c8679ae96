"""Responses for every handler: bytes with their headers built once, JSON rendered by orjson (numpy included).

Errors render in service.errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.responses import Response

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"


class BytesResponse(Response):
    """A Starlette ``Response`` whose header list is written directly from bytes.

    ``Response.__init__`` re-derives its headers per response (lower-casing and encoding each name, checking which
    are present); on the inference routes that cost as much as a batch row of a tiny model. The result is the same
    response: ``extra`` (lower-case names), then ``content-length`` and ``content-type``, in Starlette's order.
    """

    def __init__(
        self, body: bytes, media_type: bytes, status_code: int = 200, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [*extra, (b"content-length", b"%d" % len(body)), (b"content-type", media_type)]


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response rendered by orjson (numpy arrays allowed)."""
    return BytesResponse(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), JSON, status_code)
