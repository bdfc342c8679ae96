"""Every error the service answers with: one ``ServiceError`` family carrying the HTTP status, one renderer.

Responses are ``{"error": "<message>", "code": "<code>"}`` everywhere: KServe v2 clients (tritonclient) read
``error``, REST clients may switch on ``code``. Messages say what was wrong and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.logs import REQUEST_ID


class ServiceError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message.

    Args:
        status_code: The HTTP status to answer with.
        code: A short stable identifier (``queue_full``, ``invalid_image``, …) for clients and metrics.
        message: What was wrong and what was expected, with the numbers involved.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(ServiceError):
    """400: the request is malformed (JSON, binary header, tensor shape/datatype/size, parameter)."""

    status_code = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    """401: a bearer token is required and was missing or wrong."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """403: the request is understood but this server's settings do not allow it (repository control is off)."""

    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    """404: unknown model, version, output or route."""

    status_code = 404
    code = "not_found"


class RequestTimeout(ServiceError):
    """408: the client stopped sending its headers or body for longer than the read timeout; the connection closes."""

    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(ServiceError):
    """413: the body or the decoded image exceeds a configured limit."""

    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """415: a Content-Type or Content-Encoding the endpoint does not accept."""

    status_code = 415
    code = "unsupported_media_type"


class HeadersTooLarge(ServiceError):
    """431: the request line and headers exceed ``CNNSERVE_MAX_HEADER_BYTES``; the connection closes."""

    status_code = 431
    code = "headers_too_large"


class TooManyRequests(ServiceError):
    """429: the model's queue is full; ``Retry-After`` says when to come back."""

    status_code = 429
    code = "queue_full"


class ClientClosedRequest(ServiceError):
    """499 (nginx's convention): the client went away before its queued work ran; nobody reads this answer."""

    status_code = 499
    code = "client_disconnected"


class ServiceUnavailable(ServiceError):
    """503: the server or the model is not ready (loading, unloaded, shutting down)."""

    status_code = 503
    code = "not_ready"


class DeadlineExceeded(ServiceError):
    """504: the request's deadline passed while it waited in the queue; it never reached the model."""

    status_code = 504
    code = "deadline_exceeded"


class InternalError(ServiceError):
    """500: the model failed while running a batch; the message carries no internals."""

    status_code = 500
    code = "internal"


class ModelLoadError(ServiceError):
    """500: a model could not be loaded from the repository (files, digest, graph validation, sessions, warm-up).

    The server's side of a load, not the client's: the message names the reason so the operator can fix it.
    """

    status_code = 500
    code = "model_load_failed"


def error_response(status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """Render one error body; the only place the error JSON shape is written."""
    body = orjson.dumps({"error": message, "code": code})
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def render(err: ServiceError) -> Response:
    """The response for a ``ServiceError``."""
    return error_response(err.status_code, err.code, err.message, err.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return render(exc)


def internal_error(request_id: str) -> Response:
    """The answer to an unexpected exception: no internals, only the id to quote (the log has the traceback)."""
    return error_response(500, "internal", f"internal server error; quote request id {request_id} to the operator")


async def _on_unhandled(request: Request, exc: Exception) -> Response:
    """FastAPI's error middleware answers with this, then re-raises to the request middleware, which logs it."""
    return internal_error(REQUEST_ID.get())


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if exc.status_code != 404 else f"no route {request.method} {request.url.path}; see /docs"
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(message), exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render ServiceErrors, routing errors (404/405) and unexpected exceptions in the one error shape.

    No route declares parameters for FastAPI to validate (handlers read and check what they take), so FastAPI's
    validation errors cannot occur.
    """
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(Exception, _on_unhandled)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
