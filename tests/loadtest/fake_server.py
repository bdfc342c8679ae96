"""A deliberately slow HTTP/1.1 server on 127.0.0.1 for load-loop tests: one request at a time, fixed service time.

It is the fault injected into the harness's tests (a real server would be too fast to show queueing); the
harness's client, parser and schedule under test are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from loadtest.http import Endpoint


@dataclass
class FakeServer:
    """How the fake behaves, and what it saw."""

    service_time_s: float = 0.0
    status: int = 200
    close_after_response: bool = False
    never_answer: bool = False
    burst_period_s: float = 0.0  # answer everything waiting at each multiple of this period, like a batcher
    served: int = 0
    arrivals: list[float] = field(default_factory=list)  # loop.time() when each request was read
    endpoint: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 0))
    _busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.arrivals.append(asyncio.get_running_loop().time())
                if self.never_answer:
                    await asyncio.sleep(3600)
                if self.burst_period_s:
                    now = asyncio.get_running_loop().time()
                    await asyncio.sleep(self.burst_period_s - now % self.burst_period_s)
                async with self._busy:  # one request at a time: a single-threaded, slow server
                    await asyncio.sleep(self.service_time_s)
                self.served += 1
                body = b'{"ok":true}'
                close = b"Connection: close\r\n" if self.close_after_response else b""
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (self.status, len(body), close, body))
                await writer.drain()
                if self.close_after_response:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # serve() cancels handlers at teardown; ending normally keeps asyncio.start_server from logging
            # the cancellation as an error of the connection callback.
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serve(fake: FakeServer) -> AsyncIterator[FakeServer]:
    """Run ``fake`` on a free port for the duration of the block."""
    server = await asyncio.start_server(fake._handle, "127.0.0.1", 0)
    fake.endpoint = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        yield fake
    finally:
        server.close()
        for task in fake._handlers:  # handlers still waiting (never_answer) end with the server
            task.cancel()
        await asyncio.gather(*fake._handlers, return_exceptions=True)
