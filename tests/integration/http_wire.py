"""HTTP/1.1 on raw sockets, for tests that must control exactly which bytes are on the wire and when.

An HTTP client library hides the states these tests need (a half-sent header, a stalled body, requests pipelined on
one connection, a request written to a connection the server is about to close) and retries or reconnects on its
own, so resets would go unseen. Every read here is bounded by the socket's timeout.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

TIMEOUT_S = 30.0  # generous: a socket read this long means the server failed to answer, never a slow machine


@dataclass
class Answer:
    """One HTTP response as read off the wire."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"

    @property
    def code(self) -> str | None:
        """The service's error ``code``, when the body is its error JSON."""
        try:
            return str(orjson.loads(self.body)["code"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None


class Wire:
    """One client connection: write request bytes, read whole responses in order, see how the server closed it."""

    def __init__(self, port: int, timeout_s: float = TIMEOUT_S) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> Answer:
        """Read one complete response (``Content-Length`` framed, as the service answers).

        Raises:
            ConnectionError: the server closed or reset the connection before the whole response arrived.
        """
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection without answering")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = self.file.read(length)
        if len(body) != length:
            raise ConnectionError(f"the response body ended after {len(body)} of {length} bytes")
        return Answer(status, headers, body)

    def closed_by_server(self) -> bool:
        """Whether the server has closed the connection cleanly (EOF); a reset raises ``ConnectionResetError``."""
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def refuses_connections(port: int, timeout_s: float = TIMEOUT_S) -> bool:
    """Wait (bounded) until nothing listens on ``port`` any more: the server has begun its shutdown."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            return True
        time.sleep(0.01)
    return False


def vm_rss_bytes(pid: int) -> int:
    """A process's resident memory, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
