"""New client connections spread evenly over the worker processes: a worker ahead of a sibling hands one over.

Each worker listens on a socket of its own (``SO_REUSEPORT``, ``service/supervisor.py``), and the kernel picks the
socket by a hash of the connection's addresses: even over many connections, uneven over few. Four keep-alive
connections (a load balancer's pool, a sidecar, a load test) all landed on one worker in one run of eight, which then
served everything on one core while the other idled, at half the throughput (docs/benchmarks.md).

So each worker keeps its count of client connections in a record its siblings read (``service/worker_slots.py``).
A worker that accepts a connection while it holds more than the sibling with the fewest (that sibling's count, plus
what this worker sent it that it has not taken in yet) passes the socket to that sibling before reading a byte: the
descriptor goes over the sibling's Unix datagram socket (``<pid>.inbox``, ``SCM_RIGHTS``), and the sibling serves
the connection as if it had accepted it. The kernel keeps the connection, and whatever the client has sent already,
across the move: the sender's close is not the last reference. When the sibling cannot take it (gone, draining, its
inbox full), the worker keeps the connection. Connections opened one after another end up even to within one;
only a new connection moves, once, so none is ever moved after a byte of it was read.
"""

from __future__ import annotations

import array
import asyncio
import functools
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from service.peers import worker_folder
from service.worker_slots import WorkerSlots

#: A worker's record of its client connections, and its inbox for connections handed over, in the private folder.
COUNT_SUFFIX = ".conns"
INBOX_SUFFIX = ".inbox"
#: A worker's record: its client connections now, and the connections it has taken from siblings, ever.
RECORD = struct.Struct("qq")


class ConnectionBalance:
    """This worker's share of the server's client connections (see the module docstring).

    Args:
        directory: The workers' private folder.
        worker: Names this worker's record and inbox; its PID unless a test stands in for several workers.
    """

    def __init__(self, directory: Path, worker: str = "") -> None:
        self._directory = directory
        self._worker = worker or str(os.getpid())
        self._count = 0  # client connections this worker serves
        self._adopted_total = 0  # connections taken from siblings, ever: tells a sender its sends arrived
        self._slots: WorkerSlots | None = None  # made by start(): siblings see a worker once it can take connections
        self._inbox: socket.socket | None = None
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._outbox.setblocking(False)
        self._owed: dict[str, tuple[int, int]] = {}  # sibling -> (its adopted total when last read, sent not taken)
        self._adopted: set[int] = set()  # descriptors taken from the inbox whose connection is not made yet
        self._serving: set[asyncio.Task[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._factory: Callable[[], asyncio.Protocol] | None = None

    @property
    def count(self) -> int:
        """Client connections this worker serves now."""
        return self._count

    def start(self, loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        """Take connections from siblings (each served by a protocol from ``protocol_factory``) and publish the
        count, so that siblings send some."""
        self._loop, self._factory = loop, protocol_factory
        inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.setblocking(False)
        inbox.bind(str(self._directory / f"{self._worker}{INBOX_SUFFIX}"))
        self._inbox = inbox
        loop.add_reader(inbox.fileno(), self._receive)
        self._slots = WorkerSlots(self._directory, COUNT_SUFFIX, RECORD, self._record(), self._worker)

    def opened(self, transport: asyncio.Transport) -> bool:
        """A client connection was just accepted (nothing read yet): True when it is this worker's, and counted;
        False when a sibling took it, and the transport is closed (the caller must not use it)."""
        fd = transport.get_extra_info("socket").fileno()
        if fd in self._adopted:  # a sibling's, handed over: never passed on again
            self._adopted.discard(fd)
            self._adopted_total += 1
        elif self._slots is not None and (target := self._fewest()) is not None and self._send(target, fd):
            transport.abort()
            return False
        self._count += 1
        self._publish()
        return True

    def closed(self) -> None:
        """One of this worker's client connections closed."""
        self._count -= 1
        self._publish()

    async def stop(self) -> None:
        """Take no more connections from siblings, and hand none over (before the drain): siblings stop seeing
        this worker, and what is already in the inbox is served (and drained with the rest)."""
        inbox, slots, loop = self._inbox, self._slots, self._loop
        self._outbox.close()
        if inbox is None or slots is None or loop is None:
            return
        (self._directory / f"{self._worker}{INBOX_SUFFIX}").unlink(missing_ok=True)
        slots.close()
        self._slots = None
        loop.remove_reader(inbox.fileno())
        self._receive()
        inbox.close()
        self._inbox = None
        if self._serving:
            await asyncio.gather(*self._serving, return_exceptions=True)

    def _record(self) -> tuple[int, int]:
        return self._count, self._adopted_total

    def _publish(self) -> None:
        if self._slots is not None:
            self._slots.write(*self._record())

    def _fewest(self) -> str | None:
        """The sibling with the fewest connections, counting those sent to it and not taken in yet, when it has
        fewer than this worker. A worker holding none keeps the connection without listing the folder."""
        if self._count == 0:
            return None
        best: str | None = None
        fewest = self._count
        owed = {}
        for name, (count, adopted) in self._slots.siblings() if self._slots is not None else ():
            seen, sent = self._owed.get(name, (adopted, 0))
            owed[name] = (adopted, max(0, sent - (adopted - seen)))  # what it took in since counts as arrived
            if count + owed[name][1] < fewest:
                best, fewest = name, count + owed[name][1]
        self._owed = owed
        return best

    def _send(self, name: str, fd: int) -> bool:
        """Pass the connection ``fd`` to sibling ``name``; False if it cannot take it now."""
        try:
            # (socket.send_fds would drop the address before Python 3.12)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            self._outbox.sendmsg([b"c"], rights, 0, str(self._directory / f"{name}{INBOX_SUFFIX}"))
        except OSError:  # gone or draining (no inbox), or its inbox is full
            return False
        adopted, sent = self._owed[name]
        self._owed[name] = (adopted, sent + 1)
        return True

    def _receive(self) -> None:
        """Serve every connection waiting in the inbox."""
        while self._inbox is not None:
            try:
                _, fds, _, _ = socket.recv_fds(self._inbox, 1, 1)
            except (BlockingIOError, InterruptedError):
                return
            for fd in fds:
                self._adopt(socket.socket(fileno=fd))

    def _adopt(self, connection: socket.socket) -> None:
        if connection.type != socket.SOCK_STREAM or connection.family not in (socket.AF_INET, socket.AF_INET6):
            connection.close()  # not a client's TCP connection: nothing a sibling sends
            return
        assert self._loop is not None
        assert self._factory is not None
        connection.setblocking(False)
        self._adopted.add(connection.fileno())
        task = self._loop.create_task(self._serve(connection, self._loop, self._factory))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(
        self, connection: socket.socket, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        fd = connection.fileno()
        try:
            await loop.connect_accepted_socket(factory, connection)
        except OSError:  # the client left meanwhile
            self._adopted.discard(fd)
            connection.close()


@functools.cache
def connection_balance() -> ConnectionBalance | None:
    """This worker's share of the connections when the server runs several worker processes, else None."""
    directory = worker_folder()
    return None if directory is None else ConnectionBalance(directory)
