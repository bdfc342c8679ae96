"""The request path's outer layers for a hot request the front door hands over whole (``service/http_direct.py``).

On the ASGI way, ``RequestContextMiddleware`` echoes (or mints) the request id and checks the bearer token, and
``FastPathMiddleware`` calls the hot route's handler and renders its ``ServiceError``. ``DirectAnswers`` does the
same for a request whose bytes the front door already holds whole, and gives the response back for the front door
to write: the handler gets a Starlette ``Request`` over the request's headers and body, as it would on the ASGI way.

``take`` leaves to the ASGI way what those layers would answer differently: a request whose bearer token does not
match (the 401 is the middleware's), a request id that could not be echoed as it came, and every request while the
access log is on (the middleware writes it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from service.admission import fit_request_id
from service.api.fastpath import FastPathMiddleware, Matched, answer
from service.api.middleware import bearer_matches, id_and_authorization, unhandled
from service.logs import REQUEST_ID

logger = logging.getLogger(__name__)

#: Where the app's lifespan state holds its ``DirectAnswers``, for the front door.
DIRECT_KEY = "cnnserve.direct"


@dataclass(frozen=True)
class Taken:
    """A request ``DirectAnswers.take`` took: its hot route, and the request id it answers with (echoed or minted)."""

    found: Matched
    request_id: bytes


@dataclass(frozen=True)
class DirectAnswers:
    """Hot routes answered for the front door (module docstring).

    Args:
        fast_path: Finds the hot route and its handler, as on the ASGI way.
        token: The bearer token every request needs, or None.
        access_log: Whether the middleware logs every request (then no request is taken here).
    """

    fast_path: FastPathMiddleware
    token: bytes | None
    access_log: bool

    def take(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]]) -> Taken | None:
        """The request taken to be answered here, or None when it must go the ASGI way."""
        if self.access_log:
            return None
        found = self.fast_path.match(method, path)
        if found is None:
            return None
        client_id, authorization = id_and_authorization(headers)  # read as the middleware reads them
        if self.token is not None and not bearer_matches(authorization, self.token):
            return None
        request_id = fit_request_id(client_id)  # (one not ASCII is never echoed: a new one is minted)
        if not request_id.decode().isprintable():
            return None  # echoed, a control character would be refused by uvicorn: the ASGI way decides then
        return Taken(found, request_id)

    async def answer(self, taken: Taken, scope: Scope, receive: Receive) -> Response:
        """The response to a request ``take`` took, the handler run with its request id set for the log."""
        request_id = taken.request_id.decode()
        context = REQUEST_ID.set(request_id)
        try:
            return await answer(taken.found, Request(scope, receive))
        except Exception:
            return unhandled(scope, request_id)
        finally:
            REQUEST_ID.reset(context)
