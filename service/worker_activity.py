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
memory, ``service/worker_slots.py``), the ``time.monotonic()`` at which it last answered its last request in flight,
or 0 while it has one: a store to memory per change, no system call. A sibling maps the file read-only and compares.
The supervisor deletes a dead worker's file when it replaces the worker, so one that died busy keeps the others from
spreading until then.
"""

from __future__ import annotations

import functools
import struct
import time
from collections.abc import Callable
from pathlib import Path

from service.admission import InflightLimit
from service.peers import worker_folder
from service.worker_slots import WorkerSlots

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
        self._monotonic = clock
        self._slots = WorkerSlots(directory, BUSY_SUFFIX, _STAMP, (clock(),), worker)  # quiet since it started
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
        self._slots.write_packed(_BUSY)

    def idle(self) -> None:
        """This worker has answered its last request in flight."""
        self._slots.write(self._monotonic())

    def siblings_quiet(self) -> bool:
        """Whether every other worker has had no request in flight for ``QUIET_S`` (one directory listing)."""
        now = self._monotonic()
        return all(since != 0.0 and now - since >= QUIET_S for _, (since,) in self._slots.siblings())


@functools.cache
def worker_activity() -> WorkerActivity | None:
    """This worker's activity when the server runs several worker processes (the supervisor says so), else None."""
    directory = worker_folder()
    return None if directory is None else WorkerActivity(directory)
