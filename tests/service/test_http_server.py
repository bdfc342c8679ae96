"""The server's shutdown takes in the connections the kernel queued on its listener instead of resetting them.

Deterministic: the test queues the connections itself (the kernel completes a handshake without the process) and
starts the shutdown before the event loop runs again, so they are still queued when the listener closes. Plain
``uvicorn.Server`` is run the same way to show that the state is real: its shutdown resets them.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from service.http_drain import protocol_factory
from service.http_limits import HttpLimits
from service.http_server import DrainingServer, accept_backlog
from service.settings import Settings


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """``DrainingServer.startup`` freezes the heap (``freeze_heap``): give the test process its own back after."""
    yield
    gc.unfreeze()


QUEUED = 3
REQUEST = b"GET /v2/models HTTP/1.1\r\nHost: t\r\n\r\n"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})


def _queue_requests(port: int) -> list[socket.socket]:
    """Connect and send a request on each of ``QUEUED`` connections nobody has accepted yet."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(QUEUED)]
    for client in clients:
        client.sendall(REQUEST)
    return clients


def _answer(client: socket.socket) -> bytes:
    """Everything the server sent before it closed (the client's socket calls block; run in a thread)."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_accept_backlog_takes_in_every_queued_connection() -> None:
    received: list[bytes] = []

    class Recorder(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.append(data)

    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        listener.setblocking(False)
        clients = _queue_requests(listener.getsockname()[1])
        transports = await accept_backlog(listener, Recorder)
        assert len(transports) == QUEUED
        assert await accept_backlog(listener, Recorder) == []  # the queue is empty, the listener still open
        async with asyncio.timeout(10):
            while len(received) < QUEUED:
                await asyncio.sleep(0.01)
        assert received == [REQUEST] * QUEUED
        for transport, client in zip(transports, clients, strict=True):
            transport.close()
            client.close()


@pytest.mark.parametrize("server_class", [uvicorn.Server, DrainingServer])
async def test_requests_queued_on_the_listener_at_shutdown_are_answered_not_reset(
    server_class: type[uvicorn.Server],
) -> None:
    limits = HttpLimits.from_settings(Settings(drain_idle_s=0.5))
    config = uvicorn.Config(_app, host="127.0.0.1", port=0, http=protocol_factory(limits), lifespan="off")  # type: ignore[arg-type]
    config.load()
    server = server_class(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    clients = _queue_requests(port)  # blocking calls: the loop accepts nothing meanwhile
    await server.shutdown()  # before the loop runs again: the connections are still queued
    answers = await asyncio.gather(*(asyncio.to_thread(_answer, c) for c in clients), return_exceptions=True)
    for client in clients:
        client.close()
    if server_class is uvicorn.Server:
        assert all(isinstance(answer, ConnectionResetError) for answer in answers), answers  # the premise
        return
    for answer in answers:  # each a whole answer, then the end of the stream: served, or refused as draining
        assert isinstance(answer, bytes), answer
        assert answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 503 ")), answer
        assert answer.endswith(b"served\r\n0\r\n\r\n") or b'"code":"shutting_down"' in answer, answer


async def test_startup_freezes_the_heap_it_built() -> None:
    config = uvicorn.Config(_app, host="127.0.0.1", port=0, lifespan="off")
    config.load()
    server = DrainingServer(config)
    server.lifespan = config.lifespan_class(config)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    built_at_startup = [object(), {"a": [1]}]  # tracked containers, alive across the startup
    await server.startup()
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(built_at_startup)
    assert not any(built_at_startup is o for o in gc.get_objects())  # frozen: the collector no longer walks it
    await server.shutdown()
