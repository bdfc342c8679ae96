"""A whole plain request in one read is started without the HTTP parser (``service/http_whole.py``): the app sees
the scope and body the parser's path gives, and the client the same bytes; order, closing and disconnects hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from test_http_admission import INFER, _Connection


class _Echo(_Connection):
    """A connection with room, to an app that records each scope and answers with the body it read."""

    def __init__(self) -> None:
        super().__init__(inflight=0)
        self.admission.policy.limit = 8  # room for a request behind one under way
        self.scopes: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None  # set: the app waits for it before answering
        self.protocol.app = self._echo
        self.protocol.url = b""

    @property
    def parsed(self) -> bytes:
        """The targets uvicorn's parser has read on this connection (its ``on_url`` collects them in ``url``)."""
        return self.protocol.url

    async def _echo(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(dict(scope))
        message = await receive()
        if self.hold is not None:
            await self.hold.wait()
        body = message.get("body", b"")
        headers = [(b"content-length", b"%d" % len(body)), (b"x-path", scope["path"].encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def echo() -> AsyncIterator[_Echo]:
    connection = _Echo()
    yield connection
    connection.close()


REQUESTS = [
    INFER,
    b"GET /v2/models/m/ready?verbose=1&x HTTP/1.1\r\nHost: t\r\nX-Tabs:\tv\t\r\nAccept: */*\r\n\r\n",
    b"POST /v1/models/m:classify HTTP/1.1\r\nHOST: t\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\nPNG",
    INFER.replace(b"Host: t", b"Host: t\r\nConnection: keep-alive"),
    b"DELETE /x HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", REQUESTS)
async def test_the_app_and_the_client_see_what_the_parser_path_gives(echo: _Echo, request_bytes: bytes) -> None:
    whole = await echo.feed(request_bytes)
    assert echo.parsed == b""
    split = await echo.feed(request_bytes[:20], request_bytes[20:])
    assert echo.parsed == request_bytes.split(b" ")[1]
    assert whole == split
    assert whole.startswith(b"HTTP/1.1 200 ")
    assert echo.scopes[0] == echo.scopes[1]
    assert not echo.wire.closed


async def test_connection_close_is_answered_and_closed_as_on_the_parser_path() -> None:
    request_bytes = INFER.replace(b"Host: t", b"Host: t\r\nConnection: close")
    answers = []
    for reads in ((request_bytes,), (request_bytes[:20], request_bytes[20:])):
        connection = _Echo()
        answers.append(await connection.feed(*reads))
        assert connection.wire.closed
        connection.close()
    assert answers[0] == answers[1]
    assert b"\r\nconnection: close\r\n" in answers[0]


async def test_a_request_sent_behind_one_under_way_is_answered_after_it(echo: _Echo) -> None:
    echo.hold = asyncio.Event()
    second = b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n"
    assert await echo.feed(INFER) == b""  # under way, held
    assert await echo.feed(second) == b""  # read by the parser and queued behind the first
    echo.hold.set()
    answers = await echo.feed()
    first_answer, second_answer = answers.split(b"HTTP/1.1 ")[1:]
    assert b"x-path: /v2/models/m/infer" in first_answer
    assert b"x-path: /second" in second_answer
    assert echo.parsed == b"/second"


async def test_a_client_gone_mid_request_is_seen_by_the_app(echo: _Echo) -> None:
    seen: list[dict[str, Any]] = []

    async def waits_for_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())  # waits until the client goes

    echo.protocol.app = waits_for_disconnect
    await echo.feed(INFER)
    echo.protocol.connection_lost(None)
    await echo.feed()
    assert [message["type"] for message in seen] == ["http.request", "http.disconnect"]
    assert seen[0]["body"] == b"{...}"


@pytest.mark.parametrize("split", [False, True], ids=["whole", "parsed"])
async def test_the_answer_is_on_the_wire_when_the_apps_last_send_returns(echo: _Echo, split: bool) -> None:
    # The client waits for the answer, not for what the app does after it (metrics, its task ending) or for the
    # loop's next turn: the protocol sends it as the response completes.
    on_wire_after_send: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        on_wire_after_send.append(bytes(echo.wire.sent))

    echo.protocol.app = app
    answer = await echo.feed(*((INFER[:20], INFER[20:]) if split else (INFER,)))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\nok")
    assert on_wire_after_send == [answer]
