"""The open loop: requests sent on a fixed schedule (Poisson or evenly spaced), whatever the server does.

The schedule never waits for the server (no coordinated omission): a request due while every connection is busy
goes out on a new connection, or waits in a client-side backlog once the pool is full, and that wait is part of
its latency, as it would be a user's.
"""

from __future__ import annotations

import asyncio
import random
import time

from loadtest.load_loop import LoadLoop
from loadtest.payloads import Workload
from loadtest.transport import Lane, Transport


class OpenLoop(LoadLoop):
    """Requests at a given rate over a pool of at most ``max_connections`` (the rest as for ``LoadLoop``)."""

    def __init__(self, transport: Transport, workload: Workload, timeout_s: float, max_connections: int) -> None:
        super().__init__(transport, workload, timeout_s)
        self.max_connections = max_connections
        self._idle: list[Lane] = []

    def start(self, rate_per_s: float, poisson: bool, seed: int) -> None:
        """Start the arrival schedule at ``rate_per_s`` (exponential gaps when ``poisson``)."""
        if rate_per_s <= 0:
            raise ValueError(f"rate is {rate_per_s} requests/s, expected > 0")
        self._start()
        self._spawn(self._schedule(rate_per_s, poisson, seed))

    def _on_free(self, connection: Lane, now: float) -> None:
        self._idle.append(connection)
        self._send_backlog()

    def _on_lost(self) -> None:
        self._send_backlog()  # a connection the server closed makes room for a new one

    def _submit(self, scheduled: float) -> None:
        """A request is due: it joins the backlog, which goes out in order on idle or new connections."""
        self._backlog.append(scheduled)
        self._send_backlog()
        self.result.max_backlog = max(self.result.max_backlog, len(self._backlog))

    def _send_backlog(self) -> None:
        """Send waiting requests, oldest first, on idle connections, then on new ones while the pool has room."""
        backlog = self._backlog
        while backlog:
            connection = self._idle_connection()
            if connection is not None:
                self._send(connection, backlog.popleft())
            elif len(self._connections) + self._opening < self.max_connections:
                self._opening += 1
                self._spawn(self._open_and_send(backlog.popleft()))
            else:
                return

    def _idle_connection(self) -> Lane | None:
        """An idle connection still open; those the server closed while they were idle leave the pool."""
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
            self._connections.discard(connection)
        return None

    async def _open_and_send(self, scheduled: float) -> None:
        try:
            connection = await self._connect()
        except OSError:
            self._record(scheduled, 0, "connect_failed", time.perf_counter())
        else:
            self._send(connection, scheduled)
        finally:
            self._opening -= 1
            self._send_backlog()  # its place in the pool is free again
            self._check_drained()

    async def _schedule(self, rate_per_s: float, poisson: bool, seed: int) -> None:
        """Issue requests at their scheduled times; late wake-ups send every request already due at once."""
        gaps = random.Random(seed)
        mean_gap = 1.0 / rate_per_s
        due = time.perf_counter()
        while self.issuing:
            now = time.perf_counter()
            while due <= now and self.issuing:
                self._submit(due)
                due += gaps.expovariate(rate_per_s) if poisson else mean_gap
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        self._check_drained()
