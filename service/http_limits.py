"""What one HTTP connection may cost, and the refusals the front door writes itself.

``service/http_protocol.py`` enforces these limits below the ASGI app, where a request is still bytes: nothing here
knows about models. The refusals are rendered once, through ``service.errors``, so they carry the service's usual
``{"error": …, "code": …}`` body.
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import http
import struct
import termios
from dataclasses import dataclass
from functools import cached_property

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

from service.errors import (
    BadRequest,
    HeadersTooLarge,
    RequestTimeout,
    ServiceError,
    ServiceUnavailable,
    render,
)
from service.settings import Settings


def raw_head(err: ServiceError, *, close: bool) -> tuple[bytes, bytes]:
    """``err`` as HTTP/1.1 bytes: the status line and headers (without the blank line that ends them), and the body.

    For the front door, which writes its answers without an ASGI app; the caller may add headers before the end.
    """
    response = render(err)
    lines = [f"HTTP/1.1 {err.status_code} {http.HTTPStatus(err.status_code).phrase}".encode()]
    lines += [name + b": " + value for name, value in response.raw_headers]
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines), bytes(response.body)


def raw_response(err: ServiceError) -> bytes:
    """``err`` as the bytes of a complete HTTP/1.1 response that closes the connection."""
    head, body = raw_head(err, close=True)
    return head + b"\r\n\r\n" + body


class Phase(enum.Enum):
    """Where the parser is in the request it is reading (not the one being answered)."""

    IDLE = "idle"  # between requests
    HEADERS = "headers"  # request line and headers under way
    BODY = "body"  # headers complete, body under way


@dataclass(frozen=True)
class HttpLimits:
    """The front door's settings (see docs/settings.md) and the refusals that quote them."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    write_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int
    drain_idle_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            write_timeout_s=settings.write_timeout_s,
            keep_alive_timeout_s=settings.keep_alive_timeout_s,
            max_connections=settings.max_connections,
            drain_idle_s=settings.drain_idle_s,
        )

    @cached_property
    def headers_too_large(self) -> bytes:
        return raw_response(
            HeadersTooLarge(
                f"the request line and headers exceed {self.max_header_bytes} bytes (CNNSERVE_MAX_HEADER_BYTES)"
            )
        )

    @cached_property
    def header_timeout(self) -> bytes:
        return raw_response(
            RequestTimeout(
                f"the request headers were not complete {self.header_timeout_s:g} s after their first byte "
                "(CNNSERVE_HEADER_TIMEOUT_S)"
            )
        )

    @cached_property
    def body_timeout(self) -> bytes:
        return raw_response(
            RequestTimeout(
                f"the request body stalled: nothing arrived for {self.body_timeout_s:g} s (CNNSERVE_BODY_TIMEOUT_S)"
            )
        )

    @cached_property
    def too_many_connections(self) -> bytes:
        return raw_response(
            ServiceUnavailable(
                f"the server holds its limit of {self.max_connections} connections (CNNSERVE_MAX_CONNECTIONS); "
                "retry, or reuse a connection",
                code="too_many_connections",
                headers={"Retry-After": "1"},
            )
        )

    @cached_property
    def bad_request(self) -> bytes:
        return raw_response(BadRequest("the request is not valid HTTP/1.1", code="bad_request"))

    @cached_property
    def shutting_down(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """Headers and body of the 503 for requests that arrive while the server drains (sent as an ASGI answer)."""
        response = render(
            ServiceUnavailable(
                "the server is shutting down; retry on a new connection",
                code="shutting_down",
                headers={"Retry-After": "1"},
            )
        )
        return response.raw_headers, bytes(response.body)


async def answer_shutting_down(
    answer: tuple[list[tuple[bytes, bytes]], bytes], scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """The app every connection switches to on SIGTERM: 503 ``shutting_down`` (the body is left unread)."""
    headers, body = answer
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def unread_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes the client has sent that sit in the kernel, not yet read (0 when that cannot be told)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", answer)[0])
