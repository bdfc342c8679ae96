"""After a server process answers its last request in flight, its event loop polls for a while before it sleeps.

On a virtual machine a CPU with nothing to run halts, and waking it for the next request's packet costs tens of
microseconds, twice per round trip (the server's CPU, then the client's). At concurrency 1 that is a sixth of a
LeNet-5 request's latency: with the loop polling 200 us after each answer, its v2 p50 fell from 156-199 to 130-166 us
(2-core VM, four rounds, ``docs/benchmarks.md``). A plain FastAPI endpoint gets the same from ONNX Runtime's
spinning thread pool, at 186 % CPU for one client; this poll took the worker from 85 % to 100 %.

The cost is bounded: at most ``window_s`` of one core per idle period, nothing under load (the loop never runs out of
work, so the poll never starts) and nothing at idle (it stops after the window). While any request is in flight the
poll stops at once, so it never competes with a model run in the worker threads for the cores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class IdlePoll:
    """Keep ``loop`` polling (a callback that re-schedules itself holds its poll timeout at zero) for ``window_s``
    after each ``idle``, until then or until ``busy``: an ``InflightWatcher`` of the front door's count.

    Each turn of a polling loop still reads every socket, so a request that lands is served in that turn.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,  # uvloop's loop.time() has millisecond steps
    ) -> None:
        self._loop = loop
        self._window_s = window_s
        self._clock = clock
        self._deadline = 0.0
        self._polling = False

    def idle(self) -> None:
        """The process has just gone idle: poll until ``window_s`` from now (a poll under way is extended)."""
        self._deadline = self._clock() + self._window_s
        if not self._polling:
            self._polling = True
            self._loop.call_soon(self._turn)

    def busy(self) -> None:
        """A request is in flight: the poll stops at its next turn."""
        self._deadline = 0.0

    def _turn(self) -> None:
        if self._clock() >= self._deadline:
            self._polling = False
            return
        self._loop.call_soon(self._turn)
