"""A worker's share of the server's client connections (``service.connection_balance``).

Two ``ConnectionBalance`` objects on one folder, each with a worker name of its own, stand for sibling workers: each
publishes its record and has its inbox, and a connection one hands over reaches the other's protocol through a real
Unix socket. The connections are real TCP connections on 127.0.0.1, accepted by a real asyncio server whose
protocol asks the balance first, as the service's does. Nothing waits on time: each step awaits the answer it needs
(the timeout only keeps a broken build from hanging).
"""

from __future__ import annotations

import array
import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from service.connection_balance import COUNT_SUFFIX, INBOX_SUFFIX, RECORD, ConnectionBalance
from service.worker_slots import WorkerSlots

TIMEOUT_S = 10.0


class Echo(asyncio.Protocol):
    """Answers every read with the worker's name and what it read, so the client sees who served it."""

    def __init__(self, balance: ConnectionBalance, worker: str) -> None:
        self.balance = balance
        self.worker = worker.encode()
        self.counted = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.counted = self.balance.opened(transport)
        if self.counted:
            self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.worker + b":" + data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.balance.closed()


@asynccontextmanager
async def workers(folder: Path, *names: str) -> AsyncIterator[tuple[list[ConnectionBalance], int]]:
    """Balances for ``names``, each taking connections from the others, and the port where the first accepts."""
    loop = asyncio.get_running_loop()
    balances = [ConnectionBalance(folder, worker=name) for name in names]
    for balance, name in zip(balances, names, strict=True):
        balance.start(loop, lambda balance=balance, name=name: Echo(balance, name))
    server = await loop.create_server(lambda: Echo(balances[0], names[0]), "127.0.0.1", 0)
    try:
        yield balances, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for balance in balances:
            await balance.stop()


def connect(port: int, hello: bytes = b"hello") -> socket.socket:
    """A client connection that has sent ``hello`` at once, before the server has even accepted it."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(hello)
    client.setblocking(False)
    return client


async def answer(client: socket.socket) -> bytes:
    async with asyncio.timeout(TIMEOUT_S):
        return await asyncio.get_running_loop().sock_recv(client, 100)


async def test_connections_opened_one_after_another_alternate_and_keep_what_the_client_sent(tmp_path: Path) -> None:
    async with workers(tmp_path, "a", "b") as ([a, b], port):
        clients = []
        for index in range(6):
            clients.append(connect(port, b"request %d" % index))
            served = await answer(clients[-1])
            assert served == (b"a" if index % 2 == 0 else b"b") + b":request %d" % index
            assert (a.count, b.count) == ((index + 2) // 2, (index + 1) // 2)
        for client in clients:
            client.close()


async def test_a_burst_accepted_before_the_sibling_takes_any_in_is_still_shared_evenly(tmp_path: Path) -> None:
    async with workers(tmp_path, "a", "b") as ([a, b], port):
        clients = [connect(port) for _ in range(6)]  # all queued before the loop accepts the first
        served = [await answer(client) for client in clients]
        assert sorted(served) == [b"a:hello"] * 3 + [b"b:hello"] * 3
        assert (a.count, b.count) == (3, 3)
        for client in clients:
            client.close()


async def test_the_fewest_of_several_siblings_gets_the_connection(tmp_path: Path) -> None:
    async with workers(tmp_path, "a", "b", "c") as ([a, b, c], port):
        clients = [connect(port) for _ in range(3)]
        assert sorted([await answer(client) for client in clients]) == [b"a:hello", b"b:hello", b"c:hello"]
        assert (a.count, b.count, c.count) == (1, 1, 1)
        for client in clients:
            client.close()


async def test_counts_fall_as_connections_close(tmp_path: Path) -> None:
    async with workers(tmp_path, "a", "b") as ([a, b], port):
        clients = [connect(port) for _ in range(2)]
        for client in clients:
            await answer(client)
        record = WorkerSlots(tmp_path, COUNT_SUFFIX, RECORD, (0, 0), worker="reader")
        assert dict(record.siblings()) == {"a": (1, 0), "b": (1, 1)}  # b took one in from a
        for client in clients:
            client.close()
        async with asyncio.timeout(TIMEOUT_S):
            while a.count or b.count:
                await asyncio.sleep(0)  # each close is one more turn of the loop
        assert dict(record.siblings()) == {"a": (0, 0), "b": (0, 1)}
        record.close()


async def test_a_sibling_without_an_inbox_leaves_the_connection_where_it_was(tmp_path: Path) -> None:
    async with workers(tmp_path, "a", "b") as ([a, b], port):
        (tmp_path / f"b{INBOX_SUFFIX}").unlink()  # gone as if b had died, its record still there
        clients = [connect(port) for _ in range(3)]
        assert [await answer(client) for client in clients] == [b"a:hello"] * 3
        assert (a.count, b.count) == (3, 0)
        for client in clients:
            client.close()


async def test_a_sibling_that_stopped_is_no_longer_sent_connections_and_serves_those_it_had(tmp_path: Path) -> None:
    async with workers(tmp_path, "a", "b") as ([a, b], port):
        first, second = connect(port), connect(port)
        assert sorted([await answer(first), await answer(second)]) == [b"a:hello", b"b:hello"]
        await b.stop()
        assert not (tmp_path / f"b{INBOX_SUFFIX}").exists()
        assert not (tmp_path / f"b{COUNT_SUFFIX}").exists()
        third = connect(port)
        assert await answer(third) == b"a:hello"
        second.sendall(b"again")  # the connection b had before it stopped is still b's
        assert await answer(second) in (b"a:again", b"b:again")
        assert a.count == 2
        for client in (first, second, third):
            client.close()


async def test_what_is_not_a_tcp_connection_is_closed_not_served(tmp_path: Path) -> None:
    async with workers(tmp_path, "a", "b") as ([_, b], _port):
        mine, theirs = socket.socketpair()
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))]
        sender.sendmsg([b"c"], rights, 0, str(tmp_path / f"b{INBOX_SUFFIX}"))
        theirs.close()
        sender.close()
        mine.setblocking(False)
        assert await answer(mine) == b""  # closed by b: the end of the stream
        assert b.count == 0
        mine.close()
