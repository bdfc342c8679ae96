"""Several worker processes behind one port, run as one server: ``python -m service`` with ``CNNSERVE_WORKERS`` > 1.

The supervisor binds the port, starts the workers (each a ``DrainingServer`` on the shared socket and on its own
Unix socket in a private folder, ``service/peers.py``), restarts a worker that dies, and on SIGTERM or SIGINT has
every worker drain (each exactly as a single-process server does) before it exits 0. It loads no model and serves
no request itself. A worker that fails at startup stops the server: the next would fail the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.server import STARTUP_FAILURE

from service.http_server import run_server
from service.peers import PEER_DIR_ENV, WORKER_COUNT_ENV

logger = logging.getLogger(__name__)

#: Beyond the graceful shutdown period, how long the supervisor waits for a worker to exit before killing it.
EXIT_MARGIN_S = 10.0


def _worker(config: uvicorn.Config, shared: socket.socket, peer_dir: str) -> None:
    """A worker process: the app on the shared port and on this worker's socket in the peer folder."""
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind(str(Path(peer_dir) / f"{os.getpid()}.sock"))
    private.listen(64)
    run_server(config, [shared, private])


class Supervisor:
    """Starts, watches and stops the workers (see the module docstring).

    Args:
        config: The workers' uvicorn config (its app an import string, built in each worker).
        workers: How many worker processes.
        graceful_shutdown_s: How long each worker may drain on SIGTERM.
    """

    def __init__(self, config: uvicorn.Config, workers: int, graceful_shutdown_s: float) -> None:
        self.config = config
        self.workers = workers
        self.exit_timeout_s = graceful_shutdown_s + EXIT_MARGIN_S
        self.stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[Any] = []

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status: 0 after a clean drain, else the first worker's failure."""
        shared = self.config.bind_socket()
        peer_dir = tempfile.mkdtemp(prefix="cnnserve-peers-")  # mode 0700: only this user reaches the workers
        os.environ[PEER_DIR_ENV] = peer_dir
        os.environ[WORKER_COUNT_ENV] = str(self.workers)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop.set())
        try:
            self._processes = [self._start(shared, peer_dir) for _ in range(self.workers)]
            logger.info("supervisor %d: %d workers serving on one port", os.getpid(), self.workers)
            status = self._watch(shared, peer_dir)
            return self._stop_all() or status
        finally:
            shared.close()
            shutil.rmtree(peer_dir, ignore_errors=True)

    def _start(self, shared: socket.socket, peer_dir: str) -> Any:
        process = self._context.Process(target=_worker, args=(self.config, shared, peer_dir), daemon=False)
        process.start()
        return process

    def _watch(self, shared: socket.socket, peer_dir: str) -> int:
        """Restart workers that die until told to stop; a failed startup stops the server (status 3)."""
        while not self.stop.wait(0.5):
            for index, process in enumerate(self._processes):
                if process.is_alive():
                    continue
                for leftover in (f"{process.pid}.sock", f"{process.pid}.ready"):
                    (Path(peer_dir) / leftover).unlink(missing_ok=True)
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("worker %d failed to start; stopping the server", process.pid)
                    return STARTUP_FAILURE
                logger.error("worker %d died (exit status %s); starting another", process.pid, process.exitcode)
                self._processes[index] = self._start(shared, peer_dir)
        return 0

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
