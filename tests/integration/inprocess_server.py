"""A real uvicorn server running ``create_app(settings)`` in a thread of the test process, and a gate for its model.

Tests that need the service held in one state (a batch running, other requests queued behind it) cannot get it
from compute time, which depends on the machine. They run the service here instead of in a subprocess, so that
``ModelGate`` can put a wait in front of the worker-thread paths every non-inline batch takes
(``runner_gate.py``), held while the gate is closed: a batch stays "running" exactly as long as the test wants.
Give the server ``inline_batch_us=0`` so that no batch runs on the event loop, around the gate.

The server is uvicorn on uvloop with the service's own httptools protocol, as ``python -m service`` runs it, on a
port the OS picks when it binds (no free-port race); gRPC is off unless the settings name its port. It is ready
once its lifespan has loaded the models and ``/v2/health/ready`` answers 200; stopping sets ``should_exit`` and
joins the thread, both within bounded times.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx
import pytest
import uvicorn
from runner_gate import gated_runs

from service.http_drain import protocol_factory
from service.http_limits import HttpLimits
from service.http_server import DrainingServer
from service.main import create_app
from service.runtime import ModelRunner
from service.settings import Settings

T = TypeVar("T")

#: How long a batch may be held before the gate gives up on the test and fails it, loudly.
HOLD_LIMIT_S = 30.0
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0


class ModelGate:
    """Holds every batch run on a worker thread while closed; open unless a test closes it.

    ``install`` patches the class, so it gates every runner of the process, including ones already serving.
    A batch held longer than ``HOLD_LIMIT_S`` fails with an error (its requests answer 500) and is recorded in
    ``failures``, which the owner asserts empty at teardown.
    """

    def __init__(self, limit_s: float = HOLD_LIMIT_S) -> None:
        self.limit_s = limit_s
        self.failures: list[str] = []
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._held = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Put the gate in front of every worker-thread batch run (``runner_gate.THREADED_RUNS``), undone with
        ``monkeypatch``."""
        for name, run in gated_runs(self._pass).items():
            monkeypatch.setattr(ModelRunner, name, run)

    @property
    def held(self) -> int:
        """Batches waiting at the gate now."""
        with self._lock:
            return self._held

    @contextmanager
    def closed(self) -> Iterator[None]:
        """Hold every batch that reaches the model until the block ends (however it ends)."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    async def wait_held(self, count: int, timeout_s: float = 20.0) -> None:
        """Wait (bounded, without blocking the caller's event loop) until ``count`` batches wait at the gate."""
        deadline = time.monotonic() + timeout_s
        while self.held < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.held} batches reached the closed model gate, expected {count}")
            await asyncio.sleep(0.005)

    def _pass(self) -> None:
        with self._lock:
            self._held += 1
        try:
            if not self._open.wait(self.limit_s):
                message = f"a batch was held at the model gate for {self.limit_s} s: the test never opened it"
                self.failures.append(message)
                raise RuntimeError(message)
        finally:
            with self._lock:
                self._held -= 1


class InProcessServer:
    """``create_app(settings)`` under a real uvicorn, on its own event loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        if "grpc_port" not in settings.model_fields_set:  # the default, 8001, is a fixed port another server may hold
            settings = settings.model_copy(update={"grpc_port": 0})
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=0,
            loop="uvloop",
            http=protocol_factory(HttpLimits.from_settings(settings)),  # type: ignore[arg-type]
            ws="none",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        self.server = DrainingServer(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="inprocess-uvicorn", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self.server.config.get_loop_factory()) as runner:
                self._loop = runner.get_loop()
                runner.run(self.server.serve())
        except BaseException as err:  # SystemExit too: uvicorn exits on a failed startup
            self._error = err

    def start(self) -> None:
        """Start serving; return once ``/v2/health/ready`` answers 200 (bounded)."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive():
                pytest.fail(f"the in-process server stopped during startup: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the in-process server did not start within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.01)
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S) as client:
            while client.get("/v2/health/ready").status_code != 200:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"the in-process server was not ready within {STARTUP_TIMEOUT_S} s")
                time.sleep(0.01)

    def on_loop(self, call: Callable[[], T], timeout_s: float = 10.0) -> T:
        """Run ``call`` on the server's event loop (where its state may be read safely) and return its result."""
        assert self._loop is not None, "the server is not running"

        async def run() -> T:
            return call()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def has_client(self, port: int) -> bool:
        """Whether the server still holds a connection from the client socket bound to ``port`` on 127.0.0.1.

        uvicorn forgets a connection in ``connection_lost``, where it also marks the connection's unfinished
        request as disconnected: once this is False the server knows that client is gone.
        """

        def held() -> bool:
            return any(getattr(c, "client", None) == ("127.0.0.1", port) for c in self.server.server_state.connections)

        return self.on_loop(held)

    def stop(self) -> None:
        """Shut down as on SIGTERM (drain, then the lifespan's shutdown) and join the thread, within bounded times."""
        self.server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(STOP_TIMEOUT_S)
        gc.unfreeze()  # its startup froze the heap (service.http_server.freeze_heap), the test process's as well
        assert not self._thread.is_alive(), f"the in-process server did not stop within {2 * STOP_TIMEOUT_S} s"
        assert self._error is None, f"the in-process server failed: {self._error!r}"


@contextmanager
def serving(settings: Settings) -> Iterator[InProcessServer]:
    """An ``InProcessServer`` started for the block and stopped after it."""
    server = InProcessServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
