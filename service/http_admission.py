"""The front door's admission: past the app's in-flight bound a request is answered 429 before the app sees it.

``service/admission.py`` holds the policy and the prebuilt refusal; this protocol applies it to each request of a
connection, two ways:

- **From the bytes**, while the server is full: a read holding exactly one plain request with its whole body
  (``service/whole_request.py``) is answered without feeding the HTTP parser, the refusal's cheapest form (with
  room, such a request is started without the parser too: ``service/http_whole.py``, or answered without the ASGI
  cycle when it is for a hot route, ``service/http_direct.py``);
- **From the parsed head**, otherwise: where uvicorn would hand the request to the app, with the body (if small)
  then dropped unread, or the connection closed (if large).

Probes (``is_probe``), requests from sibling workers and requests during the drain are never shed. The drain on
SIGTERM is the subclass in ``service/http_drain.py``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from service import http_direct
from service.admission import (
    KEEP_ALIVE_MAX_BODY_BYTES,
    STATE_KEY,
    Admission,
    client_request_id,
    is_probe,
    small_body,
)
from service.api.direct import DIRECT_KEY, DirectAnswers
from service.http_limits import Phase
from service.http_protocol import HttpProtocol
from service.http_transport import LingeringTransport
from service.http_whole import whole_cycle
from service.peers import from_sibling
from service.whole_request import WholeRequest, whole_request


class AdmittingHttpProtocol(HttpProtocol):
    """``HttpProtocol`` that sheds past the in-flight bound, as the module docstring says."""

    _draining = False  # set by the drain on shutdown (service/http_drain.py): admission no longer applies
    admission: Admission | None = None  # published by the app's lifespan, found when a connection is made
    _from_client = True  # not a sibling worker (set when connected)
    direct: DirectAnswers | None = None  # the app's answers to hot requests taken whole (``service/http_direct.py``)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._handed_over:
            return
        self.admission = self.app_state.get(STATE_KEY)
        self._from_client = not from_sibling(self.server)
        if self._from_client:  # a sibling's requests are whole-server calls, never hot routes
            self.direct = self.app_state.get(DIRECT_KEY)

    def data_received(self, data: bytes) -> None:
        if self._phase is Phase.IDLE and self._from_bytes(data):
            return
        super().data_received(data)

    def _from_bytes(self, data: bytes) -> bool:
        """Take a read holding one whole plain request without the parser: refused while the server is full, else
        started as the parser would start it (``service/http_whole.py``). False when ``data`` is anything else."""
        if self._draining or self.pipeline or self._refusal is not None:
            return False  # the drain's bookkeeping, and answers owed before this one, are the parser path's
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.transport.is_closing():
            return False
        request = whole_request(data, self.limits.max_header_bytes)
        if request is None:
            return False
        admission = self.admission
        if admission is not None and admission.policy.full and self._from_client and not is_probe(request.path):
            self._refuse_whole(request, admission)
            return True
        self._unset_keepalive_if_required()
        body = memoryview(data)[len(data) - request.body_bytes :]
        direct = None if self.flow.write_paused else self.direct  # a client behind in reading: the ASGI way waits
        if direct is not None and (taken := direct.take(request.method, request.path, request.headers)) is not None:
            http_direct.serve(self, direct, taken, request, bytes(body), admission)
            return True
        self.cycle = whole_cycle(self, request, body)
        self._start_asgi_task(self.cycle, self.app)
        return True

    def _refuse_whole(self, request: WholeRequest, admission: Admission) -> None:
        """Answer ``request`` 429 from its bytes: no request cycle, one write."""
        transport = self.transport
        assert isinstance(transport, LingeringTransport)
        close = request.close or request.body_bytes > KEEP_ALIVE_MAX_BODY_BYTES  # as the parser's path decides
        transport.write_whole(admission.refusal(request.method, request.path, request.request_id, close))
        self.server_state.total_requests += 1
        if close:
            transport.close()
        else:
            self._arm_idle(self.timeout_keep_alive)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """Where a request is handed to the app (at once, or after the answers owed before it): admit it first."""
        admission = self.admission
        if admission is not None and not self._draining and not is_probe(cycle.scope["path"]) and self._from_client:
            if not admission.policy.admit():
                self._shed(cycle, admission)
                return
            app = functools.partial(admission.serve, app)
        super()._start_asgi_task(cycle, app)

    def _shed(self, cycle: RequestResponseCycle, admission: Admission) -> None:
        """Answer 429 ``overloaded`` without the app; a small body is then dropped as it arrives, a large one closes."""
        scope = cycle.scope
        close = not cycle.keep_alive or not small_body(scope["headers"])
        client_id = client_request_id(scope["headers"])
        self.transport.write(admission.refusal(scope["method"], scope["path"], client_id, close))
        cycle.response_started = cycle.response_complete = True  # uvicorn's parser callbacks now drop the body
        if close:
            self.transport.close()
        self.on_response_complete()
