"""The front door's shutdown: every request a client has sent gets an answer, never a reset.

On SIGTERM uvicorn stops accepting and calls ``shutdown()`` on each connection. uvicorn's own protocol closes idle
connections there, losing requests already on the wire; here the connection drains instead: requests under way get
their results, every request that arrives later gets a 503 ``shutting_down``, the last answer says
``Connection: close``, and an idle connection closes after ``drain_idle_s``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from service.http_admission import AdmittingHttpProtocol
from service.http_limits import HttpLimits, Phase, answer_shutting_down, unread_bytes


class DrainingHttpProtocol(AdmittingHttpProtocol):
    """``AdmittingHttpProtocol`` that drains on shutdown, as the module docstring says."""

    _closed_early: tuple[RequestResponseCycle, bool] | None = None  # a drain decision and the client's wish

    def shutdown(self) -> None:
        """Drain: answer what is under way, 503 ``shutting_down`` what arrives, close idle after ``drain_idle_s``."""
        self._draining = True
        self.app = functools.partial(answer_shutting_down, self.limits.shutting_down)
        self.timeout_keep_alive = self.limits.drain_idle_s  # type: ignore[assignment]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.response_started:
                self._close_after(cycle)
        elif self._phase is Phase.IDLE and not self.transport.is_closing():
            self._arm_idle(self.limits.drain_idle_s)

    def on_message_begin(self) -> None:
        if self._draining and self._closed_early is not None:
            cycle, client_keeps_alive = self._closed_early
            if not cycle.response_started:  # a later request will carry the Connection: close instead
                cycle.keep_alive = client_keeps_alive
        super().on_message_begin()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._draining:
            self._close_after(cycle)
        super()._start_asgi_task(cycle, app)

    def _close_after(self, cycle: RequestResponseCycle) -> None:
        """While draining, ``cycle``'s answer closes the connection unless the client has sent more behind it."""
        if cycle.keep_alive and not self._more_pending():
            self._closed_early = (cycle, True)
            cycle.keep_alive = False

    def _more_pending(self) -> bool:
        """Whether the client has sent more requests than this connection has started answering."""
        if self.pipeline or self._phase is Phase.HEADERS:
            return True
        return self._phase is Phase.IDLE and unread_bytes(self.transport) > 0


def protocol_factory(limits: HttpLimits) -> Callable[..., DrainingHttpProtocol]:
    """What uvicorn's ``http=`` takes: builds a connection's protocol with ``limits`` (picklable for workers)."""
    return functools.partial(DrainingHttpProtocol, limits=limits)
