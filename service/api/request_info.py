"""What a request tells the data plane besides its body: how long its client will wait, and whether it still is."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from service.api.client_numbers import MAX_TIMEOUT_MS, decimal_number
from service.api.routes import HeaderParameter
from service.errors import BadRequest

TIMEOUT_HEADER = b"x-request-timeout-ms"
#: The documentation of ``TIMEOUT_HEADER``, for the inference routes that read it.
TIMEOUT = HeaderParameter(
    "X-Request-Timeout-Ms",
    f"Deadline in milliseconds from arrival (0 to {MAX_TIMEOUT_MS}, ASCII digits, fractions allowed; 0: none). A "
    "request not started by then gets 504; one with less than the 1 ms deadline resolution left when it would "
    "queue is refused at once.",
    {"type": "string", "pattern": r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)$"},
)


def header(request: Request, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case: ASGI servers give names so), or None when absent.

    Read from the ASGI scope directly: Starlette's ``request.headers.get`` encodes the name and raises and catches
    a KeyError for each absent header; the four lookups of a v2 request cost it ~7 % of its Python in process.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def timeout_header_us(request: Request) -> int | None:
    """``X-Request-Timeout-Ms`` in microseconds, or None when absent.

    Raises:
        BadRequest: the header is not an ASCII decimal number of milliseconds from 0 to ``MAX_TIMEOUT_MS``.
    """
    raw = header(request, TIMEOUT_HEADER)
    if raw is None:
        return None
    ms = decimal_number(raw, MAX_TIMEOUT_MS)
    if ms is None:
        raise BadRequest(
            f"X-Request-Timeout-Ms is {raw[:40]!r}, expected a number of milliseconds from 0 to {MAX_TIMEOUT_MS} "
            "(one hour) in ASCII digits, such as 250 or 0.5",
            code="bad_timeout",
        )
    return max(1, round(ms * 1000)) if ms else 0  # 0.0001 ms stays a (sub-resolution) deadline, not "none"


def disconnect_probe(request: Request) -> Callable[[], bool] | None:
    """A zero-cost check of whether the client has gone, for the batcher to consult before running a request.

    Uvicorn marks its request cycle ``disconnected`` when the connection drops; its ``receive`` is a bound method
    of that cycle. Under another server the probe is unavailable and queued work simply runs.
    """
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)
