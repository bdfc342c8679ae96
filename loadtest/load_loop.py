"""What both load loops share: a pool of connections (lanes), recording answers, the measurement window, the drain.

``loadtest.closed_loop`` and ``loadtest.open_loop`` decide when requests are sent; this module sends them over a
transport's lanes (HTTP keep-alive connections, gRPC channels or streams: ``loadtest.transport``) and records what
comes back. Latency is always measured from the request's *scheduled* time. Requests scheduled before the
measurement starts are warm-up and discarded. Everything runs from callbacks on one event loop: no task per
request (but for a unary gRPC call, which grpc.aio makes a task of anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Coroutine
from typing import Any

from loadtest.payloads import Workload
from loadtest.step_result import StepResult
from loadtest.transport import Lane, Transport

_WATCHDOG_PERIOD_S = 0.05


class LoadLoop(ABC):
    """Sends a workload over a transport's lanes and records what comes back; subclasses decide when to send.

    A subclass starts the load, then says what a connection does once answered (``_on_free``) and when its
    connection died (``_on_lost``).

    Args:
        transport: Where the requests go and over what (an HTTP ``Endpoint``, a ``GrpcTarget``).
        workload: Requests cycled in order.
        timeout_s: A request (including its wait in the backlog) older than this fails as ``timeout``.
    """

    def __init__(self, transport: Transport, workload: Workload, timeout_s: float) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self.result = StepResult()
        self.issuing = False
        self.measure_from = math.inf
        self._requests = workload.requests
        self._next_request = 0
        self._max_requests = 0
        self._connections: set[Lane] = set()
        self._opening = 0  # connections being opened, each with a request waiting for it
        self._backlog: deque[float] = deque()  # scheduled times of requests due while no connection was free
        self._inflight = 0
        self._window_end = math.inf
        self._window_answers = 0
        self._min_answers = 0
        self._window_wants_answers = False  # the duration passed, but too few answers came in the window
        self._cpu_from = 0.0
        self._finish_by = math.inf
        self._drained = asyncio.Event()
        self._answers = 0  # every answer or failure so far, warm-up included
        self._answers_wanted = 0
        self._warm = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def measure(self, duration_s: float, max_requests: int, min_answers: int = 0) -> None:
        """End the warm-up now: requests scheduled from here on count, until ``duration_s`` or ``max_requests``.

        With ``min_answers`` (closed loops), the window closes only once that many answers arrived in it (at most
        the request timeout past ``duration_s``), and then just after an answer, not at an arbitrary instant: a
        batching server answers in bursts, and a window that cut a round in two would miscount the rate by up to
        a whole burst. The warm-up also ends on an answer, so the window holds whole rounds.
        """
        self.measure_from = time.perf_counter()
        self._max_requests = max_requests
        self._min_answers = min_answers
        self._finish_by = self.measure_from + duration_s + 2 * self.timeout_s + 2.0
        self._cpu_from = time.process_time()
        loop = asyncio.get_running_loop()
        loop.call_later(duration_s, self._stop_issuing)
        loop.call_later(duration_s + self.timeout_s, self._close_window)

    async def warm_up(self, seconds: float, answers: int) -> None:
        """Wait ``seconds``, and then until ``answers`` requests have come back (at most the request timeout).

        A closed loop is in its steady state only once every user has had an answer: with 64 users on a model
        taking 1.5 s per round, a fixed short warm-up would end before the first answer.
        """
        await asyncio.sleep(seconds)
        self._answers_wanted = answers
        if self._answers < answers:
            self._warm.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._warm.wait(), self.timeout_s)

    async def finish(self) -> StepResult:
        """Wait until issuing stopped and every measured request was answered or timed out; close everything."""
        # The watchdog fails every request older than the timeout, so the drain ends by then; the bound is a backstop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), max(0.0, self._finish_by - time.perf_counter()))
        result = self.result
        stuck = [c.scheduled_at for c in self._connections if c.busy] + list(self._backlog)
        result.outcomes["unfinished"] += sum(1 for scheduled in stuck if scheduled >= self.measure_from)
        if not result.outcomes["unfinished"]:
            del result.outcomes["unfinished"]
        result.cpu_s = time.process_time() - self._cpu_from
        result.window_s = max(self._window_end - self.measure_from, 1e-9)
        result.span_s = max(time.perf_counter() - self.measure_from, result.window_s)
        result.connections = len(self._connections)
        for task in self._tasks:
            task.cancel()
        for connection in list(self._connections):
            connection.close()
        return result

    @property
    def connections(self) -> int:
        """Connections open or being opened: how much of the pool the load has taken so far."""
        return len(self._connections) + self._opening

    @property
    def inflight(self) -> int:
        """Requests sent and not yet answered, plus those waiting for a connection."""
        return self._inflight + len(self._backlog)

    @abstractmethod
    def _on_free(self, connection: Lane, now: float) -> None:
        """``connection`` was answered and stays open: give it its next request, or leave it idle."""

    @abstractmethod
    def _on_lost(self) -> None:
        """A connection was answered (or failed) and closed; it is already out of the pool."""

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task of the generator ended: one that died records why, so the step reports it instead of a rate it
        never offered (a schedule that stopped once kept printing reports for a load that was no longer sent)."""
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            name = getattr(task.get_coro(), "__qualname__", task.get_name())
            self.result.failures.append(f"{name} died: {error!r}")
            self._close_window()  # the step is over: what it measured so far is reported, with this failure

    def _start(self) -> None:
        """Mark the loop as issuing and start failing requests that outlive the timeout."""
        self.issuing = True
        self._spawn(self._watchdog())

    async def _connect(self) -> Lane:
        connection = await asyncio.wait_for(self.transport.connect(self._on_done), self.timeout_s)
        self._connections.add(connection)
        return connection

    def _stop_issuing(self) -> None:
        if self._min_answers == 0:
            self._close_window()
        else:
            self._window_wants_answers = True

    def _close_window(self) -> None:
        if self.issuing:
            self.issuing = False
            self._window_end = time.perf_counter()
        self._check_drained()

    def _check_drained(self) -> None:
        if not self.issuing and self._inflight == 0 and not self._backlog and self._opening == 0:
            self._drained.set()

    def _send(self, connection: Lane, scheduled: float) -> None:
        now = time.perf_counter()
        self._inflight += 1  # before the window may close below, so the drain check counts this request
        if scheduled >= self.measure_from:
            result = self.result
            result.sent += 1
            lag = now - scheduled
            result.lag_sum_s += lag
            result.lag_max_s = max(result.lag_max_s, lag)
            if result.sent >= self._max_requests:
                self._close_window()
        request = self._requests[self._next_request]
        self._next_request = (self._next_request + 1) % len(self._requests)
        connection.send(request, scheduled)

    def _record(self, scheduled: float, status: int, error: str | None, now: float) -> None:
        self._answers += 1
        if self._answers >= self._answers_wanted:
            self._warm.set()
        ok = error is None and 200 <= status < 300
        result = self.result
        if self.measure_from <= now <= self._window_end:
            self._window_answers += 1
            result.window_ok += ok
            if self._window_wants_answers and self._window_answers >= self._min_answers:
                # Close a moment after this answer, so the rest of its batch (answered within microseconds to
                # a few ms of it) is counted too: 2 ms, or 5 % of the mean latency when rounds are long.
                self._window_wants_answers = False
                mean_latency = sum(result.latencies_s) / len(result.latencies_s) if result.latencies_s else 0.0
                asyncio.get_running_loop().call_later(max(0.002, 0.05 * mean_latency), self._close_window)
        if scheduled < self.measure_from:
            return
        result.outcomes[error or str(status)] += 1
        if ok:
            result.latencies_s.append(now - scheduled)

    def _on_done(self, connection: Lane, status: int, error: str | None) -> None:
        now = time.perf_counter()
        self._inflight -= 1
        self._record(connection.scheduled_at, status, error, now)
        if connection.alive:
            self._on_free(connection, now)
        else:
            self._connections.discard(connection)
            self._on_lost()
        self._check_drained()

    async def _watchdog(self) -> None:
        """Fail requests (sent or still in the backlog) older than the timeout."""
        while True:
            await asyncio.sleep(_WATCHDOG_PERIOD_S)
            now = time.perf_counter()
            for connection in list(self._connections):
                if connection.busy and now - connection.scheduled_at > self.timeout_s:
                    connection.fail("timeout")
            while self._backlog and now - self._backlog[0] > self.timeout_s:
                self._record(self._backlog.popleft(), 0, "timeout", now)
            self._check_drained()
