"""SIGTERM never resets a request a client has sent: each gets its result, or 503 ``shutting_down`` with
``Connection: close``; the server exits 0 within ``CNNSERVE_GRACEFUL_SHUTDOWN_S`` (service/http_drain.py).

The first test puts requests in every state on purpose before the signal lands, with the model held by a file gate
(``gated_service``): running, queued, pipelined behind a queued one, body half sent, bytes written while the server
is stopped (SIGSTOP, so they are unread when SIGTERM lands), and an idle keep-alive connection that sends after the
listener has closed. The second keeps clients sending on keep-alive connections through a SIGTERM, half of them
pausing between requests so that their connections are idle when it lands.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from gated_service import start_gated_server
from http_wire import TIMEOUT_S, Answer, Wire, refuses_connections, request
from live_server import REPO_ROOT, Server, metric_value, start_server

GRACE_S = 30.0
DRAIN_IDLE_S = 5.0  # generous: a request written right after the listener closes must find the connection open
HEALTH = request("GET", "/v2/health/ready")
DIGIT = (REPO_ROOT / "samples" / "digits" / "digit-3.png").read_bytes()
CLIENTS = 8
CLIENT_REQUESTS = 5_000  # per client, an upper bound: the signal comes long before
PAUSE_S = 0.02  # the pause of the clients whose connection is mostly idle


def infer() -> bytes:
    """One row for small_cnn through KServe v2 with the binary extension."""
    x = np.zeros((1, 3, 32, 32), np.float32)
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    extra = {"Inference-Header-Content-Length": str(len(header))}
    return request("POST", "/v2/models/small_cnn/infer", header + x.tobytes(), extra)


def wait_for_gauge(url: str, name: str, value: float) -> None:
    """Wait (bounded) until small_cnn's gauge ``name`` reads ``value``."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if metric_value(httpx.get(f"{url}/metrics").text, name, model="small_cnn") == value:
            return
        time.sleep(0.005)
    pytest.fail(f"{name} never read {value}")


def assert_last(answer: Answer, wire: Wire) -> None:
    """The connection's last answer says it closes, and the server then closes it cleanly."""
    assert answer.closes, answer.headers
    assert wire.closed_by_server()


def assert_shutting_down(answer: Answer) -> None:
    assert (answer.status, answer.code, answer.headers.get("retry-after")) == (503, "shutting_down", "1")


@pytest.fixture
def gated(model_repository: Path, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    gate = tmp_path / "gate"
    server = start_gated_server(
        model_repository,
        tmp_path / "drain.log",
        gate,
        models="small_cnn",
        intra_op_threads="1",
        inline_batch_us="0",
        graceful_shutdown_s=str(GRACE_S),
        drain_idle_s=str(DRAIN_IDLE_S),
    )
    yield server, gate
    gate.unlink(missing_ok=True)
    server.stop()


def test_sigterm_answers_requests_in_every_state(gated: tuple[Server, Path]) -> None:
    server, gate = gated
    gate.touch()  # from now on every batch waits at the gate
    wires = {name: Wire(server.port) for name in ("running", "queued", "pipelined", "body", "stopped", "idle")}
    try:
        wires["running"].send(infer())
        wait_for_gauge(server.url, "cnnserve_inflight_requests", 1)
        wait_for_gauge(server.url, "cnnserve_queue_depth", 0)  # taken, held at the gate
        wires["queued"].send(infer())
        wait_for_gauge(server.url, "cnnserve_queue_depth", 1)
        wires["pipelined"].send(infer() * 2)  # the second is parsed and waits behind the first
        wait_for_gauge(server.url, "cnnserve_queue_depth", 2)
        wires["pipelined"].send(HEALTH)  # a third, read before the signal or after
        body = infer()
        wires["body"].send(body[: len(body) - 100])
        wires["idle"].send(HEALTH)
        assert wires["idle"].answer().status == 200  # kept alive, then idle
        os.kill(server.process.pid, signal.SIGSTOP)  # sent while the server cannot read: unread when SIGTERM lands
        try:
            wires["stopped"].send(HEALTH)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert refuses_connections(server.port), "kept accepting connections after SIGTERM"
        wires["idle"].send(HEALTH)  # on a connection idle when the drain began
        wires["body"].send(body[len(body) - 100 :])
        gate.unlink()  # the held and queued batches may run now

        answer = wires["idle"].answer()
        assert_shutting_down(answer)
        assert_last(answer, wires["idle"])
        for name in ("running", "queued", "body"):
            answer = wires[name].answer()
            assert answer.status == 200, (name, answer)
            assert_last(answer, wires[name])
        pipelined = [wires["pipelined"].answer() for _ in range(3)]
        assert [a.status for a in pipelined[:2]] == [200, 200]  # read before the signal: served
        assert not pipelined[1].closes  # more was sent behind it
        assert pipelined[2].status == 200 or pipelined[2].code == "shutting_down", pipelined[2]
        assert_last(pipelined[2], wires["pipelined"])
        answer = wires["stopped"].answer()
        assert answer.status == 200 or answer.code == "shutting_down", answer  # read before or after the drain began
        assert wires["stopped"].closed_by_server()
        assert server.process.wait(timeout=GRACE_S) == 0, server.log()[-3000:]
        print(f"\nexit 0 {time.monotonic() - started:.2f} s after SIGTERM (grace {GRACE_S:g} s)")
    finally:
        for wire in wires.values():
            wire.close()
    assert "timeout graceful shutdown exceeded" not in server.log()


class Client(threading.Thread):
    """Sends classify requests on one keep-alive connection until the server closes it; notes every outcome."""

    def __init__(self, port: int, signalled: threading.Event, pause_s: float) -> None:
        super().__init__()
        self.port = port
        self.signalled = signalled
        self.pause_s = pause_s  # between an answer and the next request: the connection sits idle meanwhile
        self.answers: list[tuple[bool, int, str | None]] = []  # (sent after the signal, status, code)
        self.failure: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 2 * GRACE_S
        try:
            with Wire(self.port) as wire:
                for _ in range(CLIENT_REQUESTS):
                    if time.monotonic() > deadline:
                        self.failure = "still open after the grace period"
                        return
                    if select.select([wire.sock], [], [], 0)[0]:  # as HTTP clients check a kept-alive connection
                        if not wire.closed_by_server():
                            self.failure = "unexpected bytes on an idle connection"
                        return
                    time.sleep(self.pause_s)
                    after = self.signalled.is_set()
                    wire.send(request("POST", "/v1/models/lenet5_digits/classify", DIGIT))
                    answer = wire.answer()
                    self.answers.append((after, answer.status, answer.code))
                    if answer.closes:
                        if not wire.closed_by_server():
                            self.failure = "Connection: close, but the connection stayed open"
                        return
        except OSError as err:  # a reset, or a response cut short
            self.failure = repr(err)


def test_sigterm_under_load_resets_nothing(model_repository: Path, tmp_path: Path) -> None:
    server = start_server(
        model_repository,
        tmp_path / "load.log",
        models="lenet5_digits",
        graceful_shutdown_s=str(GRACE_S),
        drain_idle_s=str(DRAIN_IDLE_S),
    )
    signalled = threading.Event()
    clients = [Client(server.port, signalled, PAUSE_S * (i % 2)) for i in range(CLIENTS)]  # half busy, half idle
    try:
        for client in clients:
            client.start()
        deadline = time.monotonic() + TIMEOUT_S
        while min(len(c.answers) for c in clients) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        signalled.set()
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(2 * GRACE_S)
        code = server.process.wait(timeout=GRACE_S)
        exited_s = time.monotonic() - started
    finally:
        server.stop()
    answers = [a for c in clients for a in c.answers]
    late = [a for a in answers if a[0]]
    refused = [a for a in answers if a[1] == 503]
    print(f"\n{CLIENTS} clients: {len(answers)} answers, {len(late)} to requests sent after SIGTERM, "
          f"{len(refused)} of them 503 shutting_down; exit {code} {exited_s:.2f} s after SIGTERM")  # fmt: skip
    assert [c.failure for c in clients] == [None] * CLIENTS
    assert not any(c.is_alive() for c in clients)
    assert {(status, code) for _, status, code in answers} <= {(200, None), (503, "shutting_down")}
    assert code == 0, server.log()[-3000:]
    assert exited_s < GRACE_S
