"""What one HTTP connection may cost, the refusals the front door writes itself, and the staged close it uses.

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
from typing import Any

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

#: After the last response on a connection, how long the server keeps reading (and dropping) what the client still
#: sends before it closes: closing with unread bytes makes the kernel answer with a reset, which can destroy the
#: response the client has not read yet (RFC 9112 section 9.6). A client that hangs up ends it sooner.
LINGER_S = 2.0


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


class LingeringTransport(asyncio.Transport):
    """The connection's transport, closed in stages: write side first, then reading (and dropping) for a while.

    uvicorn and its request cycles call ``close()`` on whatever transport they were given; this one turns that into
    a half close (FIN after the buffered response), keeps reading so that bytes the client sent meanwhile do not
    make the kernel reset the connection, and closes for good when the client hangs up or after ``linger_s``.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, linger_s: float) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._linger_s = linger_s
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        transport = self._transport
        if transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._timer = self._loop.call_later(self._linger_s, transport.close)

    def forget(self) -> None:
        """The connection is gone: drop the linger timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        self.closing = True
        self.forget()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self.closing or self._transport.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self._transport.write(data)

    def pause_reading(self) -> None:
        if not self.closing:  # while lingering, reading goes on: that is the point
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closing:
            self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
