"""The HTTP/1.1 front door: uvicorn's httptools protocol, bounded per connection.

Below the ASGI app, where a request is still bytes, each connection is held to ``HttpLimits``:

- the request line and headers may take ``max_header_bytes`` (431 ``headers_too_large``) and ``header_timeout_s``
  from their first byte (408 ``request_timeout``); a body may pause ``body_timeout_s`` (408) while the server is
  reading it; a connection with no request under way closes after ``keep_alive_timeout_s``, a new one included;
- past ``max_connections`` a new connection is answered 503 ``too_many_connections`` at once, before it is parsed;
- a response the client does not read may stall ``write_timeout_s`` (nothing of it taken while the send buffer is
  full); then the connection is dropped, and its request's slot with it;
- every close is staged (``LingeringTransport``), so what a client sent after our last answer never becomes a reset;
- in a server of several workers, a new client connection goes to the worker with the fewest, before it is read
  (``service/connection_balance.py``).

Admission (429 ``overloaded`` past the app's in-flight bound) is the subclass in ``service/http_admission.py``, and
the drain on SIGTERM the one in ``service/http_drain.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.connection_balance import ConnectionBalance, connection_balance
from service.http_limits import HttpLimits, Phase
from service.http_transport import LINGER_S, LingeringTransport

logger = logging.getLogger(__name__)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with the limits described in the module docstring."""

    _handed_over = False  # a sibling worker took the connection before it was read: nothing here to do for it
    _balance: ConnectionBalance | None = None  # counts this client connection while it is open

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.timeout_keep_alive = limits.keep_alive_timeout_s  # type: ignore[assignment]  # uvicorn types it int
        self._phase = Phase.IDLE
        self._header_bytes = 0  # fed to the parser since the current request's headers began
        self._header_deadline = 0.0
        self._last_read = 0.0  # when body bytes last arrived
        self._idle_deadline: float | None = None  # when an idle connection closes; None while a request is under way
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0
        self._unsent = 0  # bytes waiting in the send buffer when the client last took some
        self._unsent_since = 0.0
        self._refusal: bytes | None = None  # a refusal waiting for the answers owed before it

    # ---- connection ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        balance = connection_balance()
        if balance is not None and isinstance(transport.get_extra_info("peername"), tuple):  # a client's, over TCP
            if not balance.opened(transport):
                self._handed_over = True
                return
            self._balance = balance
        super().connection_made(LingeringTransport(transport, self.loop, LINGER_S))
        if len(self.connections) > self.limits.max_connections:
            self.connections.discard(self)  # not counted, not drained: it is answered and closing
            self._refuse(self.limits.too_many_connections)
            return
        self._arm_idle(self.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handed_over:
            return
        if self._balance is not None:
            self._balance.closed()
            self._balance = None
        super().connection_lost(exc)
        if self._watchdog is not None:
            self._watchdog.cancel()
        assert isinstance(self.transport, LingeringTransport)
        self.transport.forget()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing() or self._refusal is not None:
            return  # lingering, or refusing once earlier answers are out: the bytes are dropped
        if self._phase is Phase.BODY:
            self._last_read = self.loop.time()
            super().data_received(data)
            return
        room = self.limits.max_header_bytes - self._header_bytes
        self._header_bytes += min(len(data), room)
        if len(data) <= room:
            super().data_received(data)
            return
        # Feed only what the header budget allows, so the parser never buffers more than the limit.
        super().data_received(data[:room])
        if self._phase is Phase.HEADERS and self._header_bytes >= self.limits.max_header_bytes:
            self._refuse(self.limits.headers_too_large)
        else:  # the headers ended within the budget: the rest is body or the next request
            self.data_received(data[room:])

    def send_400_response(self, msg: str) -> None:
        self._refuse(self.limits.bad_request)

    # ---- parser callbacks ------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = Phase.HEADERS
        self._header_deadline = self.loop.time() + self.limits.header_timeout_s
        self._watch(self._header_deadline)

    def on_headers_complete(self) -> None:
        self._phase = Phase.BODY
        self._header_bytes = 0
        self._last_read = self.loop.time()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = Phase.IDLE
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's, with the idle close left to the watchdog: no timer is made and cancelled per request. And the
        answer leaves now, not at the end of the loop turn: the client waits for it, not for the app's bookkeeping
        after its last ``send`` (metrics, the request's task ending) or for the loop's next turn."""
        assert isinstance(self.transport, LingeringTransport)
        self.transport.flush()
        self.server_state.total_requests += 1
        if self._refusal is not None and not self.pipeline:
            self._refuse(self._refusal)
            return
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._arm_idle(self.timeout_keep_alive)

    # ---- limits ----------------------------------------------------------------------------------------------

    def _arm_idle(self, delay_s: float) -> None:
        """The connection is idle: close it after ``delay_s`` unless a byte arrives first."""
        self._idle_deadline = self.loop.time() + delay_s
        self._watch(self._idle_deadline)

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn calls this when bytes arrive: the connection is no longer idle."""
        self._idle_deadline = None

    def _watch(self, deadline: float) -> None:
        """Make sure the watchdog fires by ``deadline``; it re-reads the phase then, so stale firings cost nothing."""
        if self._watchdog is None or self._watchdog_at > deadline:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = self.loop.call_at(deadline, self._on_watchdog)
            self._watchdog_at = deadline

    def pause_writing(self) -> None:
        """The send buffer is full: from now on the client must keep taking bytes (``write_timeout_s``)."""
        super().pause_writing()
        self._unsent = self.transport.get_write_buffer_size()
        self._unsent_since = self.loop.time()
        self._watch(self._unsent_since + self.limits.write_timeout_s)

    def _write_stalled(self, now: float) -> bool:
        """While writing is paused: drop the connection if the client took nothing for ``write_timeout_s``."""
        unsent = self.transport.get_write_buffer_size()
        if unsent < self._unsent:
            self._unsent, self._unsent_since = unsent, now
        deadline = self._unsent_since + self.limits.write_timeout_s
        if now < deadline:
            self._watch(deadline)
            return False
        logger.warning(
            "dropped %s: the client read nothing of a response for %g s", self.client, now - self._unsent_since
        )
        self.transport.abort()  # uvicorn marks the request disconnected and wakes its writer
        return True

    def _on_watchdog(self) -> None:
        self._watchdog = None
        now = self.loop.time()
        if self.flow.write_paused and self._write_stalled(now):
            return
        if self.transport.is_closing() or self._refusal is not None:
            return
        if self._idle_deadline is not None:
            if now < self._idle_deadline:
                self._watch(self._idle_deadline)
            else:
                self.timeout_keep_alive_handler()
            return
        if self._phase is Phase.HEADERS:
            deadline = self._header_deadline
        elif self._phase is Phase.BODY:
            if self.flow.read_paused or self.pipeline or self.cycle.waiting_for_100_continue:
                self._last_read = now  # the server, not the client, holds the body up
            deadline = self._last_read + self.limits.body_timeout_s
        else:
            return
        if now < deadline:
            self._watch(deadline)
        elif self._phase is Phase.HEADERS:
            self._refuse(self.limits.header_timeout)
        elif self.cycle.response_started:
            self.transport.close()  # it was answered already (say, 413 before the body): nothing to add
        else:
            self.cycle.disconnected = True  # the app sees the client gone and its answer goes nowhere
            self.cycle.message_event.set()
            self._refuse(self.limits.body_timeout)

    def _refuse(self, response: bytes) -> None:
        """Write a refusal and close; after the answers still owed to earlier requests, to keep them in order."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            self._refusal = response
            self.flow.pause_reading()
            return
        self.transport.write(response)
        self.transport.close()
