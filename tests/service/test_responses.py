"""``BytesResponse`` sends what Starlette's ``Response`` sends; ``read_raw_body`` reads ASGI messages as
``request.stream()`` did: every chunk, the limit as they arrive, a disconnect as the client leaving."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from service.api.body import read_raw_body
from service.api.responses import JSON, OCTET_STREAM, BytesResponse, json_response
from service.errors import ClientClosedRequest, PayloadTooLarge


async def _sent(response: Response) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("a response does not read the request")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await response({"type": "http"}, receive, send)
    return messages


@pytest.mark.parametrize(
    ("ours", "starlettes"),
    [
        (BytesResponse(b'{"a":1}', JSON), Response(b'{"a":1}', media_type="application/json")),
        (
            BytesResponse(b"\x00" * 9, OCTET_STREAM, extra=[(b"inference-header-content-length", b"4")]),
            Response(
                b"\x00" * 9,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": "4"},
            ),
        ),
        (BytesResponse(b"", JSON, status_code=404), Response(b"", status_code=404, media_type="application/json")),
    ],
)
async def test_bytes_response_sends_what_starlette_sends(ours: Response, starlettes: Response) -> None:
    assert await _sent(ours) == await _sent(starlettes)


async def test_json_response_renders_numpy_and_keeps_the_status() -> None:
    np = pytest.importorskip("numpy")
    start, body = await _sent(json_response({"x": np.arange(3)}, 201))
    assert start["status"] == 201
    assert body["body"] == b'{"x":[0,1,2]}'
    assert (b"content-length", b"13") in start["headers"]


def _request(*messages: dict[str, Any], length: int | None = None) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


async def test_the_body_is_every_chunk_in_order() -> None:
    chunks = [{"type": "http.request", "body": part, "more_body": True} for part in (b"ab", b"", b"cd")]
    request = _request(*chunks, {"type": "http.request", "body": b"e", "more_body": False}, length=5)
    assert await read_raw_body(request, 5) == b"abcde"


async def test_a_body_without_messages_of_data_is_empty() -> None:
    assert await read_raw_body(_request({"type": "http.request"}), 10) == b""


async def test_the_limit_stops_the_body_as_it_arrives() -> None:
    first = {"type": "http.request", "body": b"x" * 6, "more_body": True}
    never = {"type": "http.request", "body": b"x", "more_body": False}
    request = _request(first, never)  # no declared length: only the stream shows the size
    with pytest.raises(PayloadTooLarge, match="body \\(at least\\) is 6 bytes, the limit is 5"):
        await read_raw_body(request, 5)


async def test_a_disconnect_mid_body_is_the_client_leaving() -> None:
    request = _request({"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"})
    with pytest.raises(ClientClosedRequest, match="disconnected while sending the body"):
        await read_raw_body(request, 10)
