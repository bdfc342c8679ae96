"""The front door's admission on one connection (``service/http_admission.py``), fed bytes as the socket would.

While the server is full, a whole plain request is refused from its bytes (the parser never makes a request cycle);
one split across reads, or pipelined behind another, is refused by the parser's path; both answers are the same
bytes. Probes and a server with room go to the app. The transport records what would go on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from service.admission import STATE_KEY, Admission, InflightLimit
from service.api.direct import DIRECT_KEY
from service.http_admission import AdmittingHttpProtocol
from service.http_limits import HttpLimits
from service.settings import Settings

INFER = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nX-Request-ID: rid-1\r\nContent-Length: 5\r\n\r\n{...}"


class _Wire(asyncio.Transport):
    """A TCP connection's transport, recording what is written and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.sent += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.sent += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class _Connection:
    """One connection of the front door to an app that answers 200 and records the paths it was asked for."""

    def __init__(self, inflight: int, direct: object = None) -> None:
        self.served: list[str] = []
        self.shed: list[int] = []
        policy = InflightLimit(1)
        policy.inflight = inflight
        self.admission = Admission(policy, on_shed=lambda status, _: self.shed.append(status))
        config = uvicorn.Config(self._app, interface="asgi3", proxy_headers=False, log_config=None)
        limits = HttpLimits.from_settings(Settings())
        state = {STATE_KEY: self.admission, DIRECT_KEY: direct}
        self.protocol = AdmittingHttpProtocol(config, ServerState(), state, asyncio.get_running_loop(), limits=limits)
        self.wire = _Wire()
        self.protocol.connection_made(self.wire)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"served"})

    async def feed(self, *reads: bytes) -> bytes:
        """Hand ``reads`` to the protocol as separate reads; what went on the wire once the loop has run."""
        for data in reads:
            self.protocol.data_received(data)
        for _ in range(5):  # the app's task and the turn-end flush
            await asyncio.sleep(0)
        sent, self.wire.sent = bytes(self.wire.sent), bytearray()
        return sent

    def close(self) -> None:
        self.protocol.connection_lost(None)


@pytest.fixture
async def full() -> AsyncIterator[_Connection]:
    connection = _Connection(inflight=1)
    yield connection
    connection.close()


async def test_a_whole_request_is_refused_from_its_bytes_and_the_connection_stays_usable(full: _Connection) -> None:
    answer = await full.feed(INFER)
    assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"\r\nx-request-id: rid-1\r\n" in answer
    assert b"connection: close" not in answer.lower()
    assert full.protocol.cycle is None  # the parser never made a request of it
    assert full.shed == [429]
    assert await full.feed(INFER) == answer  # the next one on the same connection, read the same way
    assert not full.wire.closed
    assert full.served == []


@pytest.mark.parametrize(
    "reads",
    [
        (INFER[:30], INFER[30:]),  # the head split across reads
        (INFER[:-2], INFER[-2:]),  # the body split across reads
    ],
)
async def test_a_request_split_across_reads_gets_the_same_refusal_from_the_parser(
    full: _Connection, reads: tuple[bytes, ...]
) -> None:
    whole = await full.feed(INFER)
    assert await full.feed(*reads) == whole
    assert full.protocol.cycle is not None  # this one went through the parser
    assert full.shed == [429, 429]


async def test_pipelined_requests_are_refused_by_the_parser_in_order(full: _Connection) -> None:
    probe = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    answers = await full.feed(INFER + probe + INFER)
    first, second, third = answers.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"429")
    assert third.startswith(b"429")
    assert second.startswith(b"200")
    assert full.served == ["/v2/health/live"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        INFER.replace(b"Host: t", b"Host: t\r\nConnection: close"),  # the client asks
        INFER.replace(b"Content-Length: 5", b"Content-Length: 70000").replace(b"{...}", b"x" * 70_000),  # large
    ],
)
async def test_the_refusal_from_bytes_closes_where_the_parser_path_would(
    full: _Connection, request_bytes: bytes
) -> None:
    answer = await full.feed(request_bytes)
    assert full.protocol.cycle is None
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert full.wire.closed


async def test_probes_and_a_server_with_room_go_to_the_app(full: _Connection) -> None:
    assert (await full.feed(b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    room = _Connection(inflight=0)
    try:
        assert (await room.feed(INFER)).startswith(b"HTTP/1.1 200 ")
        assert room.served == ["/v2/models/m/infer"]
        assert room.admission.policy.inflight == 0  # admitted, answered, released
    finally:
        room.close()
    assert full.served == ["/v2/health/ready"]
    assert full.shed == []


class _Asked:
    """Direct answers that take nothing (every request goes the ASGI way) and record the paths they were asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def take(self, method: str, path: str, headers: object) -> None:
        self.asked.append(path)


async def test_a_client_behind_in_reading_its_answers_is_never_answered_directly() -> None:
    # the direct way writes the whole answer at once; the ASGI way waits for the client to drain what it owes
    direct = _Asked()
    room = _Connection(inflight=0, direct=direct)
    try:
        assert (await room.feed(INFER)).startswith(b"HTTP/1.1 200 ")
        assert direct.asked == ["/v2/models/m/infer"]
        room.protocol.flow.pause_writing()  # the transport's buffer is over its high-water mark
        assert await room.feed(INFER) == b""  # the app ran; its answer waits for the client to catch up
        assert direct.asked == ["/v2/models/m/infer"]  # not asked again: the request went the ASGI way
        assert room.served == ["/v2/models/m/infer", "/v2/models/m/infer"]
        room.protocol.flow.resume_writing()
        assert (await room.feed()).startswith(b"HTTP/1.1 200 ")
    finally:
        room.close()
