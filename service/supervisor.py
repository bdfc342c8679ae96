"""Several worker processes behind one port, run as one server: ``python -m service`` with ``CNNSERVE_WORKERS`` > 1.

The supervisor reserves the port, starts the workers (each a ``DrainingServer`` on its own listening socket on that
port and on its own Unix socket in a private folder, ``service/peers.py``; the gRPC port is shared the same way),
restarts a worker that dies, and on SIGTERM or SIGINT has every worker drain (each exactly as a single-process
server does) before it exits 0. It loads no model and serves no request itself. A worker that fails at startup stops
the server: the next would fail the same way.

Each worker listens on a socket of its own with ``SO_REUSEPORT``, and the kernel spreads new connections over them
by a hash of their addresses. One listening socket shared by all workers spreads them by who wakes first: a burst of
16 keep-alive connections (a load balancer's pool, a load test) was seen to land on one worker, which then served
everything on one core while the other idled. A hash is even only over many connections, so a worker ahead of a
sibling hands new ones over (``service/connection_balance.py``). The supervisor's own socket is bound with
``SO_REUSEPORT`` too, so the port stays reserved across worker restarts, but never listens, so the kernel gives it no
connection.

The price of that spreading: a worker whose event loop hangs would still be handed its share of new connections. So
the supervisor checks every ready worker's liveness (``GET /v2/health/live`` on its private socket, a route no load
sheds) once a second, and kills and replaces one that has not answered for ``CNNSERVE_WORKER_TIMEOUT_S``.
"""

from __future__ import annotations

import http.client
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.server import STARTUP_FAILURE

from service.connection_balance import COUNT_SUFFIX, INBOX_SUFFIX
from service.http_server import run_server
from service.peers import PEER_DIR_ENV, WORKER_COUNT_ENV
from service.worker_activity import BUSY_SUFFIX

logger = logging.getLogger(__name__)

#: The setting that gives the workers the gRPC port (the one the supervisor reserved, when asked for port 0).
GRPC_PORT_ENV = "CNNSERVE_GRPC_PORT"
#: Beyond the graceful shutdown period, how long the supervisor waits for a worker to exit before killing it.
EXIT_MARGIN_S = 10.0
#: How often a ready worker's liveness is checked, and how long one check waits for the answer.
LIVENESS_PERIOD_S = 1.0
LIVENESS_CHECK_TIMEOUT_S = 1.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a worker's private Unix socket."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def answers_liveness(path: Path, timeout_s: float = LIVENESS_CHECK_TIMEOUT_S) -> bool:
    """Whether the worker serving on ``path`` answers ``GET /v2/health/live`` with 200 within ``timeout_s``."""
    connection = UnixHTTPConnection(path, timeout_s)
    try:
        connection.request("GET", "/v2/health/live")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, so that every worker can bind the same port."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _worker(config: uvicorn.Config, port: int, peer_dir: str) -> None:
    """A worker process: the app on its own socket on the server's port, and on its socket in the peer folder."""
    public = port_socket(config.host, port)
    public.listen(config.backlog)
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind(str(Path(peer_dir) / f"{os.getpid()}.sock"))
    private.listen(64)
    run_server(config, [public, private])


class Supervisor:
    """Starts, watches and stops the workers (see the module docstring).

    Args:
        config: The workers' uvicorn config (its app an import string, built in each worker).
        workers: How many worker processes.
        graceful_shutdown_s: How long each worker may drain on SIGTERM.
        worker_timeout_s: How long a ready worker may fail its liveness checks before it is killed and replaced.
    """

    def __init__(
        self, config: uvicorn.Config, workers: int, graceful_shutdown_s: float, worker_timeout_s: float = 30.0
    ) -> None:
        self.config = config
        self.workers = workers
        self.exit_timeout_s = graceful_shutdown_s + EXIT_MARGIN_S
        self.worker_timeout_s = worker_timeout_s
        self._answered: dict[int, float] = {}  # worker PID -> when it last answered its liveness check
        self._checked = 0.0
        self.stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[Any] = []

    def run(self, grpc_port: int = 0) -> int:
        """Serve until SIGTERM or SIGINT; the exit status: 0 after a clean drain, else the first worker's failure.

        Args:
            grpc_port: The gRPC port the workers share (0: gRPC is off); reserved here like the HTTP port.
        """
        reserved = [port_socket(self.config.host, self.config.port)]  # bound, never listening: see the docstring
        port = reserved[0].getsockname()[1]  # the port asked for, or the one the kernel chose for port 0
        logger.info("serving http://%s:%d: each worker on a socket of its own (SO_REUSEPORT)", self.config.host, port)
        if grpc_port:
            reserved.append(port_socket(self.config.host, grpc_port))
            os.environ[GRPC_PORT_ENV] = str(reserved[-1].getsockname()[1])  # the workers read their settings from it
        peer_dir = tempfile.mkdtemp(prefix="cnnserve-peers-")  # mode 0700: only this user reaches the workers
        os.environ[PEER_DIR_ENV] = peer_dir
        os.environ[WORKER_COUNT_ENV] = str(self.workers)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop.set())
        try:
            self._processes = [self._start(port, peer_dir) for _ in range(self.workers)]
            logger.info("supervisor %d: %d workers serving on one port", os.getpid(), self.workers)
            status = self._watch(port, peer_dir)
            stopped = self._stop_all()  # a sibling stopped while it too was failing to start may exit otherwise
            return status or stopped
        finally:
            for sock in reserved:
                sock.close()
            shutil.rmtree(peer_dir, ignore_errors=True)

    def _start(self, port: int, peer_dir: str) -> Any:
        process = self._context.Process(target=_worker, args=(self.config, port, peer_dir), daemon=False)
        process.start()
        return process

    def _watch(self, port: int, peer_dir: str) -> int:
        """Restart workers that die until told to stop; a failed startup stops the server (status 3)."""
        while not self.stop.wait(0.5):
            self._kill_unresponsive(Path(peer_dir))
            for index, process in enumerate(self._processes):
                if process.is_alive():
                    continue
                for suffix in (".sock", ".ready", BUSY_SUFFIX, COUNT_SUFFIX, INBOX_SUFFIX):
                    (Path(peer_dir) / f"{process.pid}{suffix}").unlink(missing_ok=True)
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("worker %d failed to start; stopping the server", process.pid)
                    return STARTUP_FAILURE
                logger.error("worker %d died (exit status %s); starting another", process.pid, process.exitcode)
                self._answered.pop(process.pid, None)
                self._processes[index] = self._start(port, peer_dir)
        return 0

    def _kill_unresponsive(self, peer_dir: Path) -> None:
        """Check each ready worker's liveness (once a second); SIGKILL one silent for ``worker_timeout_s``.

        A worker still starting (no ready marker: loading models may take minutes) is not checked. The killed worker
        is then replaced like any that died.
        """
        now = time.monotonic()
        if now - self._checked < LIVENESS_PERIOD_S:
            return
        self._checked = now
        for process in self._processes:
            pid = process.pid
            if not process.is_alive() or not (peer_dir / f"{pid}.ready").exists():
                continue
            if answers_liveness(peer_dir / f"{pid}.sock"):
                self._answered[pid] = time.monotonic()
                continue
            silent_s = time.monotonic() - self._answered.setdefault(pid, now)
            if silent_s >= self.worker_timeout_s:
                logger.error(
                    "worker %d has not answered liveness checks for %.0f s (CNNSERVE_WORKER_TIMEOUT_S=%g); killing it",
                    pid, silent_s, self.worker_timeout_s,
                )  # fmt: skip
                process.kill()  # replaced on a later pass, like any worker that died

    def _stop_all(self) -> int:
        """SIGTERM every worker, wait for them to drain, kill what outlives the grace period; 0 if all exited 0."""
        for process in self._processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        status = 0
        for process in self._processes:
            process.join(self.exit_timeout_s)
            if process.is_alive():
                logger.error("worker %d did not drain in %g s; killing it", process.pid, self.exit_timeout_s)
                process.kill()
                process.join()
            if process.exitcode not in (0, STARTUP_FAILURE) and status == 0:
                status = 1
        return status
