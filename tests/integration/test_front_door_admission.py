"""The front door's admission against a real ``python -m service``: refusals at the in-flight bound, byte for byte.

The server allows 2 requests in flight. Two requests whose bodies are left unfinished hold both slots for as long
as the test wants (their handlers wait for the rest of the body), and ``cnnserve_server_inflight_requests`` says when
they are admitted: the state comes from the test, not from timing. Every exchange runs on raw sockets, so the test
sees exactly what the server writes, where the connection stays open, and where it closes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest
from live_server import Server, metric_value, start_server

MODEL = "lenet5_digits"
LIMIT = 2
TIMEOUT_S = 20.0
PROBES = ("/v2/health/ready", "/v2/health/live", "/metrics", f"/v2/models/{MODEL}/ready")


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        model_repository,
        tmp_path_factory.mktemp("logs") / "admission.log",
        models=MODEL,
        max_inflight_requests=str(LIMIT),
        workers="1",  # the bound is per process
    )
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)


def _read_response(stream: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (status, lower-cased headers, body) from a socket's file: pipelined answers stay apart."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), f"not an HTTP response: {status_line!r}"
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def _request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _inflight(server: Server) -> float:
    with _connect(server) as sock:
        sock.sendall(_request("GET", "/metrics"))
        status, _, body = _read_response(sock.makefile("rb"))
    assert status == 200
    return metric_value(body.decode(), "cnnserve_server_inflight_requests")


def _until_inflight(server: Server, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while (seen := _inflight(server)) != count:
        assert time.monotonic() < deadline, f"in flight stayed {seen}, expected {count}"
        time.sleep(0.01)


@contextmanager
def _full(server: Server) -> Iterator[None]:
    """Hold every slot with requests whose bodies never finish; release them by hanging up."""
    holders = [_connect(server) for _ in range(LIMIT)]
    try:
        for sock in holders:
            sock.sendall(_request("POST", f"/v2/models/{MODEL}/infer", b"{" * 100)[:-50])
        _until_inflight(server, LIMIT)
        yield
    finally:
        for sock in holders:
            sock.close()
    _until_inflight(server, 0)


def _overloaded(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 429, body
    assert headers["retry-after"] == "1"
    assert orjson.loads(body)["code"] == "overloaded"


def _shed_count(server: Server) -> float:
    with _connect(server) as sock:
        sock.sendall(_request("GET", "/metrics"))
        _, _, body = _read_response(sock.makefile("rb"))
    return metric_value(body.decode(), "cnnserve_requests_total", reason="overloaded")


def test_a_refused_small_request_keeps_its_connection_which_serves_once_a_slot_frees(server: Server) -> None:
    infer = _request("POST", f"/v2/models/{MODEL}/infer", b'{"inputs": []}', "X-Request-ID: shed-1")
    before = _shed_count(server)
    with _connect(server) as sock:
        stream = sock.makefile("rb")
        with _full(server):
            sock.sendall(infer)
            status, headers, body = _read_response(stream)
            _overloaded(status, headers, body)
            assert headers["x-request-id"] == "shed-1"
            assert "connection" not in headers
        sock.sendall(infer)  # the same connection, after its refused body was dropped: framing intact
        status, headers, body = _read_response(stream)
    assert status == 400, body  # admitted and answered by the app: an empty input list is a client error
    assert orjson.loads(body)["code"] != "overloaded"
    assert _shed_count(server) == before + 1


def test_pipelined_requests_are_refused_in_order(server: Server) -> None:
    with _connect(server) as sock, _full(server):
        paths = [f"/v2/models/{MODEL}/infer", "/v2/health/ready", "/v1/models"]
        sock.sendall(
            b"".join(_request("POST" if "infer" in p else "GET", p, b"{}" if "infer" in p else b"") for p in paths)
        )
        stream = sock.makefile("rb")
        answers = [_read_response(stream) for _ in paths]
    _overloaded(*answers[0])
    assert answers[1][0] == 200  # a probe between two refusals is answered, in its place
    _overloaded(*answers[2])


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"x" * 100_000, ()),  # too large to be worth reading
        (b"", ("Connection: close",)),  # the client asked
    ],
)
def test_a_refusal_closes_the_connection_when_the_body_is_large_or_the_client_asks(
    server: Server, body: bytes, headers: tuple[str, ...]
) -> None:
    with _connect(server) as sock, _full(server):
        sock.sendall(_request("POST", "/v1/models/lenet5_digits/classify", body, *headers))
        stream = sock.makefile("rb")
        status, answer_headers, answer = _read_response(stream)
        _overloaded(status, answer_headers, answer)
        assert answer_headers["connection"] == "close"
        assert stream.read() == b""  # then an orderly end of stream, not a reset


def test_probes_are_answered_while_every_slot_is_taken(server: Server) -> None:
    with _full(server):
        for path in PROBES:
            with _connect(server) as sock:
                sock.sendall(_request("GET", path))
                status, _, body = _read_response(sock.makefile("rb"))
            assert status == 200, (path, body)
        assert _inflight(server) == LIMIT  # probes take no slot
