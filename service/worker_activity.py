"""Whether the other worker processes of the server are quiet, so a lone request may have every core.

A lone request on a multi-worker server may run on every core (``service/compute_gate.py``), but only while the other
workers have nothing to do: a run on every core beside a sibling's work slows both (ORT's threads wait for each other
whenever one of them loses its core). Spreading every request that had nothing queued behind it in its own worker,
two workers serving four clients of 32-row requests served 32.5-38.2k rows/s against 41.8-45.4k on their own
shares (three rounds, the bench's small CNN on this project's 2-core VM).

So a sibling counts as quiet only once it has had no request in flight for ``QUIET_S``: a worker with a client of
its own is between two of its requests for about 0.1 ms at a time, and is never quiet; a worker without clients is.
And the worker itself must have nothing else in flight: a body still arriving on another connection, or an image
being decoded, needs a core too (``alone``).

Each worker writes, into an 8-byte file of its own in the workers' private folder (``<pid>.busy``, mapped into
memory), the ``time.monotonic()`` at which it last answered its last request in flight, or 0 while it has one: a
store to memory per change, no system call. A sibling maps the file read-only and compares. The supervisor deletes a
dead worker's file when it replaces the worker, so one that died busy keeps the others from spreading until then.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from service.admission import InflightLimit
from service.peers import PEER_DIR_ENV, WORKER_COUNT_ENV

#: A worker's activity file in the workers' private folder: ``<pid>.busy``.
BUSY_SUFFIX = ".busy"
#: How long a sibling must have had nothing in flight to count as quiet.
QUIET_S = 0.002
_STAMP = struct.Struct("d")
_BUSY = _STAMP.pack(0.0)


class WorkerActivity:
    """This worker's activity as its siblings see it, and theirs as it sees them; an ``InflightWatcher``.

    Args:
        directory: The workers' private folder.
        worker: Names this worker's file; its PID unless a test stands in for several workers.
        clock: ``time.monotonic``, one clock for every process of the machine; a test's own otherwise.
    """

    def __init__(self, directory: Path, worker: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self._directory = directory
        self._name = f"{worker or os.getpid()}{BUSY_SUFFIX}"
        self._monotonic = clock
        fd = os.open(directory / self._name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, _STAMP.size)
            self._own = mmap.mmap(fd, _STAMP.size)
        finally:
            os.close(fd)  # the mapping stays
        self._own[:] = _STAMP.pack(self._monotonic())  # quiet since it started
        self._siblings: dict[str, mmap.mmap] = {}
        self._policy: InflightLimit | None = None

    def watch(self, policy: InflightLimit) -> None:
        """Follow the front door's count of this worker's requests in flight."""
        self._policy = policy
        policy.watchers.append(self)

    def alone(self) -> bool:
        """Whether this worker has at most one request in flight (the one asking) and its siblings are quiet."""
        policy = self._policy
        return (policy is None or policy.inflight <= 1) and self.siblings_quiet()

    def busy(self) -> None:
        """This worker has a request in flight now."""
        self._own[:] = _BUSY

    def idle(self) -> None:
        """This worker has answered its last request in flight."""
        self._own[:] = _STAMP.pack(self._monotonic())

    def siblings_quiet(self) -> bool:
        """Whether every other worker has had no request in flight for ``QUIET_S`` (one directory listing)."""
        names = {name for name in os.listdir(self._directory) if name.endswith(BUSY_SUFFIX) and name != self._name}
        for gone in self._siblings.keys() - names:
            self._siblings.pop(gone).close()
        now = self._monotonic()
        for name in names:
            sibling = self._siblings.get(name) or self._map(name)
            if sibling is None:
                continue
            since = _STAMP.unpack(sibling[:])[0]
            if since == 0.0 or now - since < QUIET_S:
                return False
        return True

    def _map(self, name: str) -> mmap.mmap | None:
        """A sibling's file, mapped read-only; None if it is gone or not written yet."""
        try:
            fd = os.open(self._directory / name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size < _STAMP.size:
                return None
            self._siblings[name] = mmap.mmap(fd, _STAMP.size, access=mmap.ACCESS_READ)
            return self._siblings[name]
        finally:
            os.close(fd)


@functools.cache
def worker_activity() -> WorkerActivity | None:
    """This worker's activity when the server runs several worker processes (the supervisor says so), else None."""
    directory = os.environ.get(PEER_DIR_ENV)
    if not directory or int(os.environ.get(WORKER_COUNT_ENV, "1")) < 2:
        return None
    return WorkerActivity(Path(directory))
