"""One small record per worker process, in the workers' private folder, that its siblings read without asking it.

A worker's record is a file of a few bytes (``<pid><suffix>``) mapped into memory: the worker updates it with a
store to memory, no system call, and a sibling maps it read-only and reads it the same way. Listing the folder finds
the siblings: a worker being restarted has no record yet, and the supervisor deletes a dead worker's records when
it replaces the worker. ``service/worker_activity.py`` keeps whether each worker is busy
in one; ``service/connection_balance.py`` keeps each worker's count of client connections in another.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class WorkerSlots:
    """This worker's record of one kind (``suffix``), and its siblings' records of that kind.

    Args:
        directory: The workers' private folder.
        suffix: Names the kind of record: ``<worker><suffix>``.
        layout: The record's fields.
        initial: What the record says from the start.
        worker: Names this worker's record; its PID unless a test stands in for several workers.
    """

    def __init__(
        self, directory: Path, suffix: str, layout: struct.Struct, initial: tuple[object, ...], worker: str = ""
    ) -> None:
        self.directory = directory
        self.suffix = suffix
        self.name = f"{worker or os.getpid()}{suffix}"
        self._layout = layout
        fd = os.open(directory / self.name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, layout.size)
            self._own = mmap.mmap(fd, layout.size)
        finally:
            os.close(fd)  # the mapping stays
        self.write(*initial)
        self._siblings: dict[str, mmap.mmap] = {}

    def write(self, *values: object) -> None:
        """Replace this worker's record."""
        self._own[:] = self._layout.pack(*values)

    def write_packed(self, record: bytes) -> None:
        """Replace this worker's record with one packed beforehand (the hot path packs its records once)."""
        self._own[:] = record

    def siblings(self) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """Every other worker's name (its file's, less the suffix) and record, read now (one directory listing)."""
        names = {name for name in os.listdir(self.directory) if name.endswith(self.suffix) and name != self.name}
        for gone in self._siblings.keys() - names:
            self._siblings.pop(gone).close()
        for name in names:
            record = self._siblings.get(name) or self._map(name)
            if record is not None:
                yield name.removesuffix(self.suffix), self._layout.unpack(record[:])

    def _map(self, name: str) -> mmap.mmap | None:
        """A sibling's record, mapped read-only; None if it is gone or not written yet."""
        try:
            fd = os.open(self.directory / name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size < self._layout.size:
                return None
            self._siblings[name] = mmap.mmap(fd, self._layout.size, access=mmap.ACCESS_READ)
            return self._siblings[name]
        finally:
            os.close(fd)

    def close(self) -> None:
        """Delete this worker's record: siblings no longer see this worker."""
        (self.directory / self.name).unlink(missing_ok=True)
