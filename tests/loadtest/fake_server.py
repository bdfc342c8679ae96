"""A deliberately slow HTTP/1.1 server on 127.0.0.1 for load-loop tests: one request at a time, fixed service time.

It is the fault injected into the harness's tests (a real server would be too fast to show queueing); the
harness's client, parser and schedule under test are the real ones.

Tests compare the harness's report with what the fake records, never with nominal rates: every time it records
is ``time.perf_counter()``, the clock the harness's window uses, so a loaded machine's late timers move both
alike. ``answers_left`` holds answers back until ``release()``, so a test can keep the server still while it
opens or closes a window instead of racing the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from loadtest.http import Endpoint


@dataclass(frozen=True)
class Burst:
    """One batch of answers, all written in a single step of the event loop, as a batcher returns a batch."""

    asked_at: float  # when its last request arrived (the batch was complete)
    answered_at: float  # once every answer in it was written
    size: int


@dataclass
class _Waiting:
    writer: asyncio.StreamWriter
    answered: asyncio.Future[None]
    arrived_at: float


@dataclass
class FakeServer:
    """How the fake behaves, and what it saw."""

    service_time_s: float = 0.0
    status: int = 200
    close_after_response: bool = False
    never_answer: bool = False
    # > 0: a batcher instead of one request at a time. Once ``burst_size`` requests wait, it answers everything
    # waiting ``burst_period_s`` later, all at once (``service_time_s`` is then unused).
    burst_period_s: float = 0.0
    burst_size: int = 1
    answers_left: int | None = None  # answer this many more requests, then hold the rest until release()
    served: int = 0
    arrivals: list[float] = field(default_factory=list)  # when each request was read
    answered_at: list[float] = field(default_factory=list)  # when each answer was written
    bursts: list[Burst] = field(default_factory=list)  # batcher only
    endpoint: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 0))
    _busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)  # a request arrived, or answers were released
    _waiting: list[_Waiting] = field(default_factory=list)  # batcher: requests read and not yet answered
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def release(self) -> None:
        """Answer every request from now on (ends ``answers_left``)."""
        self.answers_left = None
        self._changed.set()

    async def arrived(self, count: int) -> None:
        """Wait until ``count`` requests in all have arrived."""
        await self._until(lambda: len(self.arrivals) >= count)

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    def _take(self, wanted: int) -> int:
        """How many of ``wanted`` answers may go out now; counts them against ``answers_left``."""
        allowed = wanted if self.answers_left is None else min(wanted, self.answers_left)
        if self.answers_left is not None:
            self.answers_left -= allowed
        return allowed

    def _answer(self, writer: asyncio.StreamWriter) -> None:
        self.served += 1
        body = b'{"ok":true}'
        close = b"Connection: close\r\n" if self.close_after_response else b""
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (self.status, len(body), close, body))
        self.answered_at.append(time.perf_counter())

    async def _batcher(self) -> None:
        """Answer whole batches: ``burst_period_s`` after ``burst_size`` requests wait, every waiting one at once.

        The period starts when the batch is complete, so the next batch can be answered no sooner than a period
        after the previous one reached its clients, however late the loop runs. The answers are written back to
        back, with no await between them, so the clients read them in the same turn of the event loop.
        """
        while True:
            await self._until(lambda: len(self._waiting) >= self.burst_size and self.answers_left != 0)
            await asyncio.sleep(self.burst_period_s)
            taken = self._take(len(self._waiting))
            batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
            if not batch:
                continue
            for waiting in batch:
                self._answer(waiting.writer)
            self.bursts.append(Burst(max(w.arrived_at for w in batch), time.perf_counter(), len(batch)))
            for waiting in batch:
                if not waiting.answered.done():
                    waiting.answered.set_result(None)

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
                arrived_at = time.perf_counter()
                self.arrivals.append(arrived_at)
                self._changed.set()
                if self.never_answer:
                    await asyncio.sleep(3600)
                if self.burst_period_s:
                    answered = asyncio.get_running_loop().create_future()
                    self._waiting.append(_Waiting(writer, answered, arrived_at))
                    await answered  # the batcher wrote the answer
                else:
                    async with self._busy:  # one request at a time: a single-threaded, slow server
                        await self._until(lambda: self.answers_left != 0)
                        self._take(1)
                        await asyncio.sleep(self.service_time_s)
                    self._answer(writer)
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
    batcher = asyncio.get_running_loop().create_task(fake._batcher()) if fake.burst_period_s else None
    try:
        yield fake
    finally:
        server.close()
        tasks = [*fake._handlers, *([batcher] if batcher else [])]
        for task in tasks:  # handlers still waiting (never_answer, held answers) end with the server
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
