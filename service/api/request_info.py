"""What a request tells the data plane besides its body: how long its client will wait, and whether it still is."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from service.errors import BadRequest

TIMEOUT_HEADER = "x-request-timeout-ms"


def timeout_header_us(request: Request) -> int | None:
    """``X-Request-Timeout-Ms`` in microseconds, or None when absent.

    Raises:
        BadRequest: the header is not a non-negative number.
    """
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms >= 0:  # also rejects NaN
        raise BadRequest(f"X-Request-Timeout-Ms is {raw!r}, expected a number of milliseconds >= 0", code="bad_timeout")
    return int(ms * 1000)


def disconnect_probe(request: Request) -> Callable[[], bool] | None:
    """A zero-cost check of whether the client has gone, for the batcher to consult before running a request.

    Uvicorn marks its request cycle ``disconnected`` when the connection drops; its ``receive`` is a bound method
    of that cycle. Under another server the probe is unavailable and queued work simply runs.
    """
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)
