"""Front-door admission: a request beyond the in-flight bound is answered 429 at once, before its body is read.

Under open-loop overload the backlog forms in the socket and on the event loop, before any model queue sees it
(DESIGN.md, "Where overload really waits"), so a queue bound alone never fires. Requests the app is serving are
counted here, where a request first reaches the app; while the count is at the bound a new request costs only its
header parse and a prebuilt answer, and the loop stays free to finish what it admitted and to answer probes.
Health, readiness and ``/metrics`` are never counted nor refused, so probes stay fast and readiness keeps its
meaning (models loaded, not draining) instead of flapping with load.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.client_numbers import whole_number
from service.errors import TooManyRequests, error_response, render

#: Seconds a shed client should wait: the in-flight work drains in well under that at any load it was admitted at.
RETRY_AFTER_S = 1
#: A refused request declaring at most this many body bytes keeps its connection: uvicorn reads and discards the
#: unread body (both its HTTP parsers frame it by Content-Length), which costs far less than a new connection.
#: A larger or chunked body is not worth receiving: that refusal says ``Connection: close``.
KEEP_ALIVE_MAX_BODY_BYTES = 64 * 1024


def is_probe(path: str) -> bool:
    """Health (server and per-model readiness) and ``/metrics``: open to probes and scrapers, never shed."""
    return (
        path.startswith("/v2/health/")
        or path == "/metrics"
        or (path.startswith("/v2/models/") and path.endswith("/ready"))
    )


class InflightLimit:
    """The admission policy: at most ``limit`` requests in flight; the caller releases each admitted one.

    Args:
        limit: Requests served at once; 0 admits everything (the count is still kept).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    def admit(self) -> bool:
        """Count the request in and say yes, or say no and count nothing."""
        if self.limit and self.inflight >= self.limit:
            return False
        self.inflight += 1
        return True

    def release(self) -> None:
        """An admitted request has been answered (or failed, or its client left)."""
        self.inflight -= 1


def small_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request declares a body of at most ``KEEP_ALIVE_MAX_BODY_BYTES`` (no body counts as small)."""
    for name, value in headers:
        if name == b"content-length":
            if whole_number(value.decode("latin-1"), KEEP_ALIVE_MAX_BODY_BYTES) is None:
                return False
        elif name == b"transfer-encoding":
            return False
    return True


class AdmissionMiddleware:
    """Admit requests while ``policy`` allows; refuse the rest with 429 ``overloaded`` before reading their bodies.

    A refusal keeps the connection when the request's body is small (see ``KEEP_ALIVE_MAX_BODY_BYTES``): measured
    with every request refused, a closed-loop client got ~8x more answers per second that way than when each
    refusal closed its connection, since a reconnect costs both sides more than the refusal itself.

    Args:
        app: The inner application.
        policy: Decides admission and counts the requests in flight.
        on_shed: Called with the status and code of each refused request (the metrics count it).
    """

    def __init__(self, app: ASGIApp, policy: InflightLimit, on_shed: Callable[[int, str], None]) -> None:
        self.app = app
        self.policy = policy
        self.on_shed = on_shed
        message = (
            f"server overloaded: {policy.limit} requests already in flight, the most it serves at once "
            f"(CNNSERVE_MAX_INFLIGHT_REQUESTS); retry after {RETRY_AFTER_S} s"
        )
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        self.error = TooManyRequests(message, code="overloaded", headers=retry)
        # Built once, sent as often as needed: shedding must be cheap.
        self.refusal = render(self.error)
        closing = {**retry, "Connection": "close"}
        self.refusal_closing = error_response(self.error.status_code, self.error.code, message, closing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_probe(scope["path"]):
            await self.app(scope, receive, send)
            return
        policy = self.policy
        if not policy.admit():
            self.on_shed(self.error.status_code, self.error.code)
            refusal = self.refusal if small_body(scope["headers"]) else self.refusal_closing
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            policy.release()
