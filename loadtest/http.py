"""A lean HTTP/1.1 keep-alive client: pre-serialised requests out, status codes in, parsed by httptools (C).

The load generator must not be the bottleneck, so a request costs one ``transport.write`` of bytes built once
and one C-level parse of the response; there is no per-request header dict, coroutine or timer. Measured
against aiohttp and ``tritonclient.http.aio`` in ``bench/client_cost.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

from loadtest.transport import DoneCallback


@dataclass(frozen=True)
class Endpoint:
    """Where the load goes: host, port, TLS, and the headers every request carries (Host, Authorization).

    It is the HTTP ``loadtest.transport.Transport``: its lanes are keep-alive ``Connection``s.
    """

    host: str
    port: int
    tls: bool = False
    token: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_url(cls, url: str, token: str | None = None) -> Endpoint:
        """Parse ``http://host:port`` (or ``https://…``); the path part must be empty."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL {url!r} is not http://host:port or https://host:port")
        if parts.path not in ("", "/"):
            raise ValueError(f"URL {url!r} has a path ({parts.path!r}); give only scheme://host:port")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, token)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def connect(self, on_done: DoneCallback) -> Connection:
        """A keep-alive connection for load requests; raises ``OSError`` when the server does not accept."""
        return await open_connection(self, on_done)

    async def probe(self, request: bytes, timeout_s: float) -> None:
        """Send ``request`` once; raises ``RuntimeError`` quoting the body of a non-2xx answer."""
        status, body = await exchange(self, request, timeout_s)
        if not 200 <= status < 300:
            reason = body[:500].decode(errors="replace")
            raise RuntimeError(f"probe request to {self.url} answered {status}, expected 2xx: {reason}")

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        """Serialise one complete request (line, headers, body), ready to be written as-is many times."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        lines += [f"{k}: {v}" for k, v in (*self.extra_headers, *(headers or {}).items())]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time (no pipelining).

    Args:
        on_done: Called on the event loop when a response completes or the exchange fails.
        keep_body: Collect response bodies (for metadata and /metrics); load requests discard them.
    """

    def __init__(self, on_done: DoneCallback, keep_body: bool = False) -> None:
        self.on_done = on_done
        self.keep_body = keep_body
        self.body = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.scheduled_at = 0.0  # when the current request was due (open loop: its slot in the schedule)
        self.alive = False
        self._parser = httptools.HttpResponseParser(self)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.alive = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail("bad_response")

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.busy:
            self._finish(0, "connection_closed")

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if self.keep_body:
            self.body += body

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.close()
        self._finish(status, None)

    # client side
    @property
    def usable(self) -> bool:
        """Open on both ends as far as we know: the server has not closed it, nor have we."""
        return self.alive and self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes, scheduled_at: float) -> None:
        """Write one pre-serialised request; ``on_done`` follows, at once (``connection_closed``) if it was closed.

        A server may close an idle keep-alive connection at any moment (a keep-alive timeout, a ``Connection:
        close`` seen late); writing to the closed transport would raise in the caller, the load's schedule.
        """
        assert not self.busy, "send() on a connection still waiting for its answer"
        self.busy = True
        self.scheduled_at = scheduled_at
        if self.keep_body:
            self.body.clear()
        if not self.usable:
            self.fail("connection_closed")
            return
        assert self.transport is not None
        self.transport.write(request)

    def fail(self, error: str) -> None:
        """Abort the current exchange (timeout, parse error): the connection is closed and ``on_done`` told."""
        self.close()
        if self.busy:
            self._finish(0, error)

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, status: int, error: str | None) -> None:
        self.busy = False
        self.on_done(self, status, error)


async def open_connection(endpoint: Endpoint, on_done: DoneCallback, keep_body: bool = False) -> Connection:
    """Connect to ``endpoint``; raises ``OSError`` when the server does not accept."""
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if endpoint.tls else None
    _, protocol = await loop.create_connection(
        lambda: Connection(on_done, keep_body), endpoint.host, endpoint.port, ssl=context
    )
    return protocol


async def exchange(endpoint: Endpoint, request: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send one pre-serialised request on a fresh connection and return (status, body): probes, metadata, /metrics.

    Raises:
        OSError: connection refused, reset, or answered with something that is not HTTP.
        TimeoutError: no complete answer within ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[tuple[int, str | None]] = loop.create_future()

    def done(_: object, status: int, error: str | None) -> None:
        if not answer.done():
            answer.set_result((status, error))

    connection = await asyncio.wait_for(open_connection(endpoint, done, keep_body=True), timeout_s)
    try:
        connection.send(request, 0.0)
        status, error = await asyncio.wait_for(answer, timeout_s)
    finally:
        connection.close()
    if error is not None:
        raise OSError(f"{endpoint.url}: the exchange failed ({error})")
    return status, bytes(connection.body)


async def get(endpoint: Endpoint, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """``GET path`` on a fresh connection; see ``exchange``."""
    return await exchange(endpoint, endpoint.request("GET", path), timeout_s)


async def wait_ready(endpoint: Endpoint, timeout_s: float, path: str = "/v2/health/ready") -> float:
    """Poll ``path`` until it answers 200, for a server still starting (as in compose); returns the seconds waited.

    Raises:
        TimeoutError: not ready within ``timeout_s`` (refused connections and non-200 answers are waited through).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        with contextlib.suppress(OSError, TimeoutError):
            if (await get(endpoint, path, timeout_s=2.0))[0] == 200:
                return loop.time() - started
        if loop.time() - started >= timeout_s:
            raise TimeoutError(f"{endpoint.host}:{endpoint.port}{path} not ready after {timeout_s:g} s")
        await asyncio.sleep(0.5)
