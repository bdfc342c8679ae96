"""What a load loop needs of a protocol: lanes that carry one pre-serialised request at a time, and how to open one.

``loadtest.load_loop`` schedules and counts; a transport moves the bytes. HTTP/1.1 keep-alive connections
(``loadtest.http``) and KServe v2 gRPC calls or streams (``loadtest.grpc_target``) are both lanes, so the closed
and open loops, the warm-up, the window, the watchdog and the reconnects are the same code for every protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: ``on_done(lane, status, error)``: an HTTP status (a gRPC status as its HTTP twin), or 0 with an error name.
DoneCallback = Callable[["Lane", int, str | None], None]


class Lane(Protocol):
    """One request in flight at a time; ``on_done`` follows every ``send`` exactly once, on the event loop."""

    busy: bool  # a request was sent and not yet answered
    scheduled_at: float  # when the current request was due (open loop: its slot in the schedule)
    alive: bool  # open as far as we know; a lane found dead is dropped from the pool, never reused

    @property
    def usable(self) -> bool:
        """Open on both ends as far as we know: a request sent now will not fail at once."""

    def send(self, request: bytes, scheduled_at: float) -> None:
        """Send one pre-serialised request; on a lane closed meanwhile, ``on_done`` follows at once."""

    def fail(self, error: str) -> None:
        """Abort the current exchange (timeout): the lane is closed and ``on_done`` told."""

    def close(self) -> None:
        """Close the lane (a request still in flight is not reported)."""


class Transport(Protocol):
    """Where a workload goes and how: opens lanes to one server endpoint. Picklable, for generator processes."""

    @property
    def url(self) -> str:
        """The endpoint as reports name it (``http://…``, ``grpc://…``)."""

    async def connect(self, on_done: DoneCallback) -> Lane:
        """Open a lane.

        Raises:
            OSError: the server does not accept the connection.
        """

    async def probe(self, request: bytes, timeout_s: float) -> None:
        """Send one request on a fresh lane, so a wrong model, shape or token fails fast with the server's reason.

        Raises:
            RuntimeError: the server answered with an error (its reason quoted).
            OSError: nothing listens at the endpoint.
        """
