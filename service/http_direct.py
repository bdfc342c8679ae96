"""Hot requests answered from their bytes: no ASGI request cycle between the front door and the route's handler.

When one read holds one whole plain request (``service/whole_request.py``) for a hot route (the inference routes),
the front door has its app answer it directly (``service/api/direct.py``: the same handler, id, token and errors as
the ASGI way) and writes the response itself. What that skips is what the ASGI way adds around the handler:
uvicorn's request cycle, the task that runs the app and its middleware layers, the ASGI messages, and the check of
every header uvicorn makes as it writes them. On LeNet-5 at concurrency 64 that was 24 µs of a request's 52 µs of
Python, and 3 µs of its kernel time (``perf`` on this project's 2-core VM, docs/benchmarks.md).

The request still has a cycle on its connection, ``DirectCycle``, holding what the protocol asks of the request
being answered: whether its answer is complete (a request read meanwhile waits behind it, as pipelining wants),
whether the client has gone (the batcher then skips it), and whether the connection stays open (the drain may close
it after this answer). The response carries the headers uvicorn would send (its ``server`` and ``date``, and
``connection: close`` when the connection closes), and the request holds its admission slot until it is written.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.admission import Admission
from service.api.direct import DirectAnswers, Taken
from service.http_transport import LingeringTransport
from service.whole_request import WholeRequest


class _NobodyWaits:
    """A direct request's body is in hand before its handler starts, so nothing waits on its cycle's event."""

    def set(self) -> None:
        """uvicorn sets the cycle's event when the connection drops, to wake a reader of the body."""


_NOBODY_WAITS = _NobodyWaits()


class DirectCycle:
    """A direct request in flight on its connection: what the protocol reads of its current cycle, and the body."""

    waiting_for_100_continue = False  # the whole body has arrived
    message_event = _NOBODY_WAITS

    def __init__(self, body: bytes, keep_alive: bool) -> None:
        self.body = body
        self.keep_alive = keep_alive  # the drain may turn it off before the answer
        self.response_started = False
        self.response_complete = False
        self.disconnected = False  # set by uvicorn when the connection drops

    async def receive(self) -> dict[str, Any]:
        """The body, as one ASGI message (the handler's ``request.receive``); then the end of the request."""
        if self.disconnected:
            return {"type": "http.disconnect"}
        body, self.body = self.body, b""
        return {"type": "http.request", "body": body, "more_body": False}


def serve(
    protocol: HttpToolsProtocol,
    answers: DirectAnswers,
    taken: Taken,
    request: WholeRequest,
    body: bytes,
    admission: Admission | None,
) -> None:
    """Start answering ``request`` (taken by ``answers.take``) on ``protocol``'s connection."""
    cycle = DirectCycle(body, keep_alive=not request.close)
    protocol.cycle = cycle  # type: ignore[assignment]  # read as uvicorn reads its own cycles (module docstring)
    scope = {
        "type": "http",
        "method": request.method,
        "path": request.path,
        "query_string": request.query_string,
        "headers": list(request.headers),
    }
    admitted = admission is not None and admission.policy.admit()
    task = protocol.loop.create_task(_answer(protocol, answers, taken, scope, cycle, admission if admitted else None))
    protocol.tasks.add(task)  # the server's shutdown waits for these, as for its own request tasks
    task.add_done_callback(protocol.tasks.discard)


async def _answer(
    protocol: HttpToolsProtocol,
    answers: DirectAnswers,
    taken: Taken,
    scope: dict[str, Any],
    cycle: DirectCycle,
    admission: Admission | None,
) -> None:
    try:
        response = await answers.answer(taken, scope, cycle.receive)
        if not cycle.disconnected:  # as uvicorn drops an answer to a client that has gone
            _write(protocol, cycle, response, taken.request_id)
    finally:
        if admission is not None:
            admission.policy.release()
    if response.background is not None:  # after the answer, as Starlette runs it
        await response.background()


def _write(protocol: HttpToolsProtocol, cycle: DirectCycle, response: Response, request_id: bytes) -> None:
    """The response, as uvicorn would write it, in one write; then the connection goes on as after any answer."""
    parts = [STATUS_LINE[response.status_code]]
    for name, value in (*protocol.server_state.default_headers, *response.raw_headers, (b"x-request-id", request_id)):
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", bytes(response.body))
    transport = protocol.transport
    assert isinstance(transport, LingeringTransport)
    transport.write_whole(b"".join(parts))
    cycle.response_started = cycle.response_complete = True
    if not cycle.keep_alive:
        transport.close()
    protocol.on_response_complete()
