"""The other worker processes of this server, reached over private Unix sockets, so that several are one server.

With ``CNNSERVE_WORKERS`` above 1 the supervisor (``service/supervisor.py``) gives every worker one folder, private
to the server's user, in ``PEER_DIR_ENV``. Each worker serves its app there too, on ``<pid>.sock`` beside the shared
TCP port, and marks itself ready with ``<pid>.ready``. A request that must speak for the whole server (``/metrics``,
statistics, repository load and unload: ``service/api/cluster.py``) is put to every other worker through its socket;
readiness counts the markers, a few stat calls that a busy sibling cannot delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

#: Where the supervisor tells a worker its peers' folder and how many workers the server has.
PEER_DIR_ENV = "CNNSERVE_INTERNAL_PEER_DIR"
WORKER_COUNT_ENV = "CNNSERVE_INTERNAL_WORKER_COUNT"
#: A sibling that has not answered a scrape or a statistics call in this long is reported as not answering.
PEER_TIMEOUT_S = 10.0
#: Loading a model (and warming every batch size up) may take minutes: a sibling gets this long.
PEER_LOAD_TIMEOUT_S = 600.0


def worker_folder() -> Path | None:
    """The workers' private folder when this process is one worker of several, else None."""
    directory = os.environ.get(PEER_DIR_ENV)
    if not directory or int(os.environ.get(WORKER_COUNT_ENV, "1")) < 2:
        return None
    return Path(directory)


def from_sibling(server: tuple[str, int | None] | None) -> bool:
    """Whether a connection's local address (ASGI's ``server``) is a Unix socket: a sibling worker's request.

    uvicorn gives a Unix socket's address as ``(path, None)``; a TCP one always has a port.
    """
    return server is None or server[1] is None


@dataclass(frozen=True)
class PeerAnswer:
    """One worker's answer (``worker`` is its pid, or "local"), or ``status`` 0 when it could not be reached in time."""

    worker: str
    status: int
    body: bytes


class Peers:
    """This worker's view of its siblings.

    Args:
        directory: The server's peer folder.
        workers: How many workers the server runs (this one included).
    """

    def __init__(self, directory: Path, workers: int) -> None:
        self.directory = directory
        self.workers = workers
        self.socket = directory / f"{os.getpid()}.sock"
        self._marker = directory / f"{os.getpid()}.ready"

    @classmethod
    def from_environment(cls) -> Peers | None:
        """The peers the supervisor announced, or None in a single-process server."""
        directory = os.environ.get(PEER_DIR_ENV)
        if not directory:
            return None
        return cls(Path(directory), int(os.environ[WORKER_COUNT_ENV]))

    def mark_ready(self, ready: bool) -> None:
        """Say (or stop saying) that this worker is ready."""
        if ready:
            self._marker.touch()
        else:
            self._marker.unlink(missing_ok=True)

    def all_ready(self) -> bool:
        """Whether every worker of the server has marked itself ready."""
        return sum(1 for _ in self.directory.glob("*.ready")) >= self.workers

    def siblings(self) -> list[Path]:
        """The sockets of the other workers (a worker being restarted has none yet)."""
        return sorted(path for path in self.directory.glob("*.sock") if path != self.socket)

    async def ask_all(self, request: bytes, timeout_s: float) -> list[PeerAnswer]:
        """Send one complete HTTP/1.1 request (it must say ``Connection: close``) to every sibling, concurrently."""
        return list(await asyncio.gather(*(_ask(path, request, timeout_s) for path in self.siblings())))


async def _ask(path: Path, request: bytes, timeout_s: float) -> PeerAnswer:
    """One exchange with one sibling; its answer read to the end of the stream (``Connection: close``)."""
    worker = path.stem
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(request)
                raw = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return PeerAnswer(worker, 0, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return PeerAnswer(worker, 0, b"")
    return PeerAnswer(worker, int(parts[1]), body)
