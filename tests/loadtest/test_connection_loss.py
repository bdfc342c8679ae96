"""The open loop's pool when the server closes connections: replaced, counted as what happened, schedule alive.

A server that answers ``Connection: close`` (a 429 refusing a large body does) or closes an idle keep-alive
connection used to leave the open loop with a dead connection in its pool, or with requests stuck in its backlog
until they timed out; the first write to a closed transport raised in the schedule task, which stopped offering
load. Every request here must be sent and answered, however often the server hangs up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fake_server import FakeServer, serve

from loadtest.http import Endpoint
from loadtest.open_loop import OpenLoop
from loadtest.payloads import Workload

REQUESTS = 60
RATE_PER_S = 400.0
TIMEOUT_S = 30.0  # far above anything a loaded machine needs here: a timeout would mean a stuck request


def _workload(endpoint: Endpoint) -> Workload:
    return Workload("test", (endpoint.request("POST", "/m", b"abc"),), 1, 3)


async def _run(endpoint: Endpoint, max_connections: int) -> OpenLoop:
    """Offer ``REQUESTS`` requests at a rate no machine keeps up with through a small pool; wait for every answer."""
    loop = OpenLoop(endpoint, _workload(endpoint), TIMEOUT_S, max_connections)
    loop.start(RATE_PER_S, poisson=False, seed=0)
    loop.measure(duration_s=TIMEOUT_S, max_requests=REQUESTS)
    await loop.finish()
    return loop


async def test_a_server_closing_every_connection_still_gets_every_request() -> None:
    """The fake holds its answers until the pool is full and requests wait behind it, then answers each with close."""
    async with serve(FakeServer(status=429, close_after_response=True, answers_left=0)) as fake:
        loop = OpenLoop(fake.endpoint, _workload(fake.endpoint), TIMEOUT_S, max_connections=2)
        loop.start(RATE_PER_S, poisson=False, seed=0)
        loop.measure(duration_s=TIMEOUT_S, max_requests=REQUESTS)
        async with asyncio.timeout(TIMEOUT_S):
            await fake.arrived(2)
            while not loop.result.max_backlog:
                await asyncio.sleep(0.001)
        fake.release()
        await loop.finish()
    result = loop.result
    assert result.sent >= REQUESTS  # the cap closes the window; requests already due still go out
    assert dict(result.outcomes) == {"429": result.sent}  # counted as the refusals they were, none timed out
    assert not loop._connections  # every closed connection left the pool


@asynccontextmanager
async def _hanging_up_when_idle() -> AsyncIterator[Endpoint]:
    """A server that answers 200 keeping the connection alive (no ``Connection: close``), then closes it anyway."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # the client's connection goes back to the pool idle, then dies there

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def test_a_pooled_connection_the_server_closed_is_replaced() -> None:
    async with _hanging_up_when_idle() as endpoint:
        loop = await _run(endpoint, max_connections=4)
    result = loop.result
    assert result.sent >= REQUESTS
    # A request may meet a connection whose close is still on its way (the keep-alive race every client has):
    # that one is counted as the closed connection it was. None is lost, none times out.
    assert set(result.outcomes) <= {"200", "connection_closed"}
    assert result.outcomes["200"] > 0
    assert sum(result.outcomes.values()) == result.sent
