"""uvicorn's ``Server``, stopping its listeners without resetting the connections the kernel had already accepted.

A client's connection is complete once the kernel has queued it on the listening socket, and the client may send
its request at once; the process picks it up with ``accept()`` later. uvicorn's shutdown closes the listeners
first, and closing a listening socket resets every connection still queued on it: requests already sent, lost.
Here the queue is taken in first, so those connections drain like every other (``DrainingHttpProtocol.shutdown``: a
request gets 503 ``shutting_down`` with ``Connection: close``, an idle connection closes after a grace period).

Once started, the server freezes the heap its startup built (``freeze_heap``), so that garbage collection never
walks it again; in a server of several workers it then takes connections its siblings hand over
(``service/connection_balance.py``), until its drain begins.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.server import STARTUP_FAILURE

from service.connection_balance import connection_balance


async def accept_backlog(
    listener: socket.socket, protocol_factory: Callable[[], asyncio.Protocol]
) -> list[asyncio.Transport]:
    """Accept every connection queued on ``listener`` and serve each with a protocol from ``protocol_factory``.

    ``listener`` is left open and as it was (a duplicate descriptor does the accepting).
    """
    connections: list[socket.socket] = []
    with socket.socket(fileno=os.dup(listener.fileno())) as duplicate:
        duplicate.setblocking(False)
        while True:  # all of them before the first await, so the loop's own accept finds none to half take
            try:
                connection, _ = duplicate.accept()
            except (BlockingIOError, InterruptedError):
                break
            connection.setblocking(False)
            connections.append(connection)
    loop = asyncio.get_running_loop()
    return [(await loop.connect_accepted_socket(protocol_factory, c))[0] for c in connections]


#: Where the app's lifespan state may hold a function called when draining starts (before any connection is closed):
#: the app stops its other listeners (gRPC) taking new calls.
DRAIN_KEY = "cnnserve.drain"


def freeze_heap() -> None:
    """Put every object alive after startup (the framework, the routes, the models' Python side) out of the cyclic
    garbage collector's sight, after one last collection.

    Under load, objects of requests in flight survive the young generations' collections and pile up in the oldest,
    and a full collection then walks the whole heap: 50-57 ms with LeNet-5's startup heap on this project's 2-core VM,
    twice a second at 5,000 requests/s, a pause of the event loop that set the p99 (68 ms at c=64, p50 12 ms).
    Frozen, a full collection walks only what came since: 0.3-0.8 ms, and the p99 became 19 ms. Reference counting
    frees frozen objects as before; only reference cycles among them would stay, and they live as long as the process.
    """
    gc.collect()
    gc.freeze()


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown first takes in the connections queued on its listeners, and whose startup
    ends by freezing the heap (module docstring)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:  # the lifespan (models loaded) and the listeners are up
            freeze_heap()
            if (balance := connection_balance()) is not None:
                balance.start(asyncio.get_running_loop(), self._protocol_factory())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        on_drain = self.lifespan.state.get(DRAIN_KEY)
        if on_drain is not None:
            on_drain()
        if (balance := connection_balance()) is not None:
            await balance.stop()  # connections already handed over to this worker are drained with the rest
        factory = self._protocol_factory()
        for server in self.servers:
            for listener in server.sockets:
                await accept_backlog(listener, factory)  # a TransportSocket has the fileno() it needs
        await super().shutdown(sockets)

    def _protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """What the listeners make each accepted connection's protocol with."""
        return functools.partial(
            self.config.http_protocol_class,  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn drains on SIGTERM/SIGINT, then re-raises the signal; exiting 0 here makes the drain a clean exit."""
    raise SystemExit(0)


def run_server(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> None:
    """Serve ``config`` until SIGTERM or SIGINT, then exit 0 once drained (``STARTUP_FAILURE`` if startup failed)."""
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    server = DrainingServer(config)
    server.run(sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run does: the lifespan failed and said why
