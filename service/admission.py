"""Front-door admission: a request beyond the in-flight bound is answered 429 at once, before its body is read.

Under open-loop overload the backlog forms in the socket and on the event loop, before any model queue sees it
(DESIGN.md, "Where overload really waits"), so a queue bound alone never fires. The HTTP front door
(``service/http_admission.py``) counts the requests the app is serving and, while the count is at the bound, answers
a new request with prebuilt bytes, from the request's bytes or where its headers are parsed: no task, no ASGI call,
no middleware, no routing. A refusal must cost a small fraction of a served request, or refusing two requests in
three (3 x overload) eats the capacity it protects. Health, readiness and ``/metrics`` are never counted nor
refused, so probes stay fast and readiness keeps its meaning (models loaded, not draining) instead of flapping with
load.

The app publishes its ``Admission`` in the lifespan state under ``STATE_KEY``; the front door finds it there, so one
policy per server process serves every connection.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable
from typing import Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.client_numbers import whole_number
from service.errors import TooManyRequests
from service.http_limits import raw_head

access_logger = logging.getLogger("cnnserve.access")

#: Where the app's lifespan state holds its ``Admission``.
STATE_KEY = "cnnserve.admission"
#: Seconds a shed client should wait: the in-flight work drains in well under that at any load it was admitted at.
RETRY_AFTER_S = 1
#: A refused request declaring at most this many body bytes keeps its connection: the front door reads and drops
#: the body, which costs far less than a new connection. A larger or chunked body is not worth receiving: that
#: refusal says ``Connection: close``.
KEEP_ALIVE_MAX_BODY_BYTES = 64 * 1024
#: The longest client ``X-Request-ID`` echoed; a longer, empty or non-ASCII one is replaced by a minted id.
MAX_REQUEST_ID_BYTES = 128


def is_probe(path: str) -> bool:
    """Health (server and per-model readiness) and ``/metrics``: open to probes and scrapers, never shed."""
    return (
        path.startswith("/v2/health/")
        or path == "/metrics"
        or (path.startswith("/v2/models/") and path.endswith("/ready"))
    )


#: Minted ids: a random prefix drawn once per process, then a counter; unique across processes and restarts without
#: a system call per request (``os.urandom`` per request cost 7 % of the CPU of a server shedding overload).
_MINT_PREFIX = os.urandom(6).hex()
_minted = itertools.count()


def fit_request_id(value: bytes) -> bytes:
    """``value`` (a client's ``X-Request-ID``, or empty) when it is fit to echo, else a freshly minted id.

    Blanks around a header's value are not part of it (RFC 9110 section 5.5): uvicorn's parser keeps the trailing ones,
    the front door's own reader drops them, and every way of answering echoes the id without them."""
    value = value.strip(b" \t")
    if value and len(value) <= MAX_REQUEST_ID_BYTES and value.isascii():
        return value
    return f"{_MINT_PREFIX}{next(_minted):x}".encode()


def client_request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The client's ``X-Request-ID`` among parsed headers, or b"" when it sent none."""
    return next((value for name, value in headers if name == b"x-request-id"), b"")


class InflightWatcher(Protocol):
    """Told when a server process gets its first request in flight, and when it has answered its last."""

    def busy(self) -> None: ...

    def idle(self) -> None: ...


class InflightLimit:
    """The admission policy: at most ``limit`` requests in flight; the caller releases each admitted one.

    Args:
        limit: Requests served at once; 0 admits everything (the count is still kept).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        #: Told when the count leaves zero and when it returns to it (the app's lifespan adds them).
        self.watchers: list[InflightWatcher] = []

    @property
    def full(self) -> bool:
        """Whether a request arriving now would be refused."""
        return bool(self.limit) and self.inflight >= self.limit

    def admit(self) -> bool:
        """Count the request in and say yes, or say no and count nothing."""
        if self.full:
            return False
        self.inflight += 1
        if self.inflight == 1:
            for watcher in self.watchers:
                watcher.busy()
        return True

    def release(self) -> None:
        """An admitted request has been answered (or failed, or its client left)."""
        self.inflight -= 1
        if not self.inflight:
            for watcher in self.watchers:
                watcher.idle()


def small_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request declares a body of at most ``KEEP_ALIVE_MAX_BODY_BYTES`` (no body counts as small)."""
    for name, value in headers:
        if name == b"content-length":
            if whole_number(value.decode("latin-1"), KEEP_ALIVE_MAX_BODY_BYTES) is None:
                return False
        elif name == b"transfer-encoding":
            return False
    return True


class Admission:
    """The policy, the refusal it writes, and what a refusal is reported to.

    Args:
        policy: Decides admission and counts the requests in flight.
        on_shed: Called with the status and code of each refused request (the metrics count it).
        access_log: Log one line per refusal, as the app logs each request it serves.
    """

    def __init__(self, policy: InflightLimit, on_shed: Callable[[int, str], None], access_log: bool = False) -> None:
        self.policy = policy
        self.on_shed = on_shed
        self.access_log = access_log
        self.error = TooManyRequests(
            f"server overloaded: {policy.limit} requests already in flight, the most it serves at once "
            f"(CNNSERVE_MAX_INFLIGHT_REQUESTS); retry after {RETRY_AFTER_S} s",
            code="overloaded",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
        # Rendered once, sent as often as needed: shedding must be cheap. Only the request id differs.
        self._keep = raw_head(self.error, close=False)
        self._close = raw_head(self.error, close=True)

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run an admitted request and give its slot back however it ends.

        A task uvicorn cancels before its first step (only at the end of a shutdown) never gets here and keeps its
        slot, which no longer matters then.
        """
        try:
            await app(scope, receive, send)
        finally:
            self.policy.release()

    def refusal(self, method: str, path: str, client_id: bytes, close: bool) -> bytes:
        """Count a refused request and return its complete response, echoing ``client_id`` if fit, else minting one.

        Args:
            client_id: The client's ``X-Request-ID`` (b"" when it sent none).
        """
        self.on_shed(self.error.status_code, self.error.code)
        if self.access_log:
            access_logger.info("%s %s %d 0.00 ms", method, path, self.error.status_code)
        head, body = self._close if close else self._keep
        return b"".join((head, b"\r\nx-request-id: ", fit_request_id(client_id), b"\r\n\r\n", body))
