"""The closed loop: N users, each with its own connection, sending again as soon as it is answered.

The offered load follows the server: a slow answer delays the user's next request. A user whose connection the
server closed opens a new one and goes on, so the concurrency holds for the whole step.
"""

from __future__ import annotations

import asyncio
import time

from loadtest.load_loop import LoadLoop
from loadtest.transport import Lane

_RECONNECT_PAUSE_S = 0.05


class ClosedLoop(LoadLoop):
    """``concurrency`` users over as many keep-alive connections (see ``LoadLoop`` for the arguments)."""

    async def start(self, concurrency: int) -> None:
        """Open ``concurrency`` connections and start every one sending (the warm-up phase until ``measure``)."""
        connections = await asyncio.gather(*(self._connect() for _ in range(concurrency)))
        self._start()
        for connection in connections:
            self._send(connection, time.perf_counter())

    def _on_free(self, connection: Lane, now: float) -> None:
        if self.issuing:
            self._send(connection, now)

    def _on_lost(self) -> None:
        if self.issuing:
            self._opening += 1
            self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        """A user whose connection died opens a new one (pausing after a refusal) and goes on."""
        try:
            while self.issuing:
                scheduled = time.perf_counter()
                try:
                    connection = await self._connect()
                except OSError:
                    self._record(scheduled, 0, "connect_failed", time.perf_counter())
                    await asyncio.sleep(_RECONNECT_PAUSE_S)
                    continue
                if self.issuing:
                    self._send(connection, time.perf_counter())
                return
        finally:
            self._opening -= 1
            self._check_drained()
