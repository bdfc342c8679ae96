"""A lone request's model run gets every core, one such run at a time across the server's worker processes.

Worker processes exist for the Python side (HTTP, JSON, images), which one interpreter cannot spread over several
cores, so each worker's sessions get its share of the cores (one ORT thread each on two cores with two workers).
Under load that is right: the workers' batches run side by side. A lone request, though, then runs at half speed
or worse: ResNet-18 answered 26 requests/s at concurrency 1 with two workers, 49 with one. So a CPU model in a
multi-worker server also gets a solo session per instance with every core (``ModelLoader``), used for a lone request
(``ModelRunner.run_lone``: one request, nothing queued or announced behind it, and the other workers quiet,
``service/worker_activity.py``; under load, every core for one row starved the decoding of the requests behind
it), and those runs pass through this gate: an exclusive ``flock`` on a file in the workers' private folder
(``service/peers.py``), held for the run alone, so two lone requests on two workers take turns on all the cores
instead of fighting over them.

Inline runs (tiny models, single-threaded sessions, on the event loop) never wait here: an event loop must not
block on another process.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
from pathlib import Path
from types import TracebackType

from service.peers import PEER_DIR_ENV, WORKER_COUNT_ENV

LOCK_NAME = "compute.lock"


class ComputeGate:
    """An exclusive hold on the CPUs for one solo run, shared by the threads of this process and by its siblings.

    Args:
        path: The lock file every worker opens (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        # flock locks an open file: threads of one process share it, so they take turns on a mutex first.
        self._mutex = threading.Lock()

    def __enter__(self) -> None:
        self._mutex.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._mutex.release()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()


@functools.cache
def cpu_gate() -> ComputeGate | None:
    """This server's gate when it runs several worker processes (the supervisor says so), else None."""
    directory = os.environ.get(PEER_DIR_ENV)
    if not directory or int(os.environ.get(WORKER_COUNT_ENV, "1")) < 2:
        return None
    return ComputeGate(Path(directory) / LOCK_NAME)
