"""Pure-ASGI middleware around every request: request id, optional bearer auth, last-resort error handling.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream per request.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.admission import fit_request_id, is_probe
from service.errors import Unauthorized, internal_error, render
from service.logs import REQUEST_ID

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("cnnserve.access")


def bearer_matches(authorization: bytes, token: bytes) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <token>``.

    The scheme is case-insensitive (RFC 7235 section 2.1: ``bearer`` and ``BEARER`` are ``Bearer``) and may be
    followed by more than one space; blanks after the token are not part of the value (RFC 9110 section 5.5), though
    uvicorn's parser keeps them; the token is compared in constant time.
    """
    scheme, _, credentials = authorization.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(b" \t"), token)


def id_and_authorization(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """The client's ``X-Request-ID`` (its first, as the front door's refusals echo it) and ``Authorization`` (its
    last), b"" when absent: one pass over the headers, read the same way by the middleware and the direct answers."""
    client_id = b""
    authorization = b""
    for key, value in headers:
        if key == b"x-request-id" and not client_id:
            client_id = value
        elif key == b"authorization":
            authorization = value
    return client_id, authorization


def unhandled(scope: Scope, request_id: str) -> Response:
    """Log the exception being handled, and return the plain 500 that quotes ``request_id``."""
    logger.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
    return internal_error(request_id)


class RequestContextMiddleware:
    """Echo (or mint) ``X-Request-ID``, check the bearer token, and turn unhandled exceptions into a plain 500.

    Args:
        app: The wrapped application.
        auth_token: When set, requests other than probes (``is_probe``) need ``Authorization: Bearer <auth_token>``.
        access_log: Log one line per request with status and duration.
    """

    def __init__(self, app: ASGIApp, auth_token: str | None = None, access_log: bool = False) -> None:
        self.app = app
        self.token = auth_token.encode() if auth_token else None
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_id, authorization = id_and_authorization(scope["headers"])
        rid_bytes = fit_request_id(client_id)
        rid = rid_bytes.decode()
        context = REQUEST_ID.set(rid)
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid_bytes)]
            await send(message)

        try:
            path = scope["path"]
            if self.token is not None and not is_probe(path) and not bearer_matches(authorization, self.token):
                reason = "missing" if not authorization else "invalid"
                denied = Unauthorized(
                    f"bearer token {reason}; send 'Authorization: Bearer <token>' (health and /metrics need none)",
                    headers={"WWW-Authenticate": 'Bearer realm="cnnserve"'},
                )
                await render(denied)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            response = unhandled(scope, rid)
            if not status:
                await response(scope, receive, send_with_id)
        finally:
            if self.access_log:
                elapsed_ms = 1e3 * (time.perf_counter() - started)
                access_logger.info("%s %s %d %.2f ms", scope.get("method"), scope.get("path"), status, elapsed_ms)
            REQUEST_ID.reset(context)
