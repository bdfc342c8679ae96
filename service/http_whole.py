"""A whole plain request started without the HTTP parser: the request cycle uvicorn's parser would have made.

When one read holds exactly one plain HTTP/1.1 request with its whole body (``service/whole_request.py``), its head
was read before (heads repeat, and each is read once) and everything the parser's callbacks would build for it is
known: the ASGI scope's method, paths, query and headers, and whether the connection stays open. Building the cycle
from that skips a dozen parser callbacks and the URL parse, about a tenth of a LeNet-5 request's CPU. The cycle is
uvicorn's own ``RequestResponseCycle``, so the answer goes out exactly as on the parser's path.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.whole_request import WholeRequest


def whole_cycle(protocol: HttpToolsProtocol, request: WholeRequest, body: memoryview) -> RequestResponseCycle:
    """The cycle uvicorn's ``on_headers_complete`` and ``on_body`` would make for ``request``, its body received."""
    root_path = protocol.root_path
    scope = {
        "type": "http",
        "asgi": {"version": protocol.config.asgi_version, "spec_version": "2.3"},
        "http_version": "1.1",
        "server": protocol.server,
        "client": protocol.client,
        "scheme": protocol.scheme,
        "root_path": root_path,
        "headers": list(request.headers),
        "state": protocol.app_state.copy(),
        "method": request.method,
        "path": root_path + request.path,
        "raw_path": root_path.encode("ascii") + request.raw_path,
        "query_string": request.query_string,
    }
    cycle = RequestResponseCycle(
        scope=scope,  # type: ignore[arg-type]
        transport=protocol.transport,
        flow=protocol.flow,
        logger=protocol.logger,
        access_logger=protocol.access_logger,
        access_log=protocol.access_log,
        default_headers=protocol.server_state.default_headers,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=not request.close,
        on_response=protocol.on_response_complete,
    )
    cycle.body += body
    cycle.more_body = False
    cycle.message_event.set()
    return cycle
