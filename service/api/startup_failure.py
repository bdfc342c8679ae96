"""A server that cannot start says why in one line, not in two tracebacks per worker.

Starlette reports a failed lifespan startup with the whole traceback as the message, and uvicorn logs it: 38 lines
for a config.json that disagrees with its graph, the reason on the last. A ``ModelLoadError`` already names the
model and the reason (and ``ModelManager`` logged it), so its report is cut to that; any other failure keeps its
traceback, which is then the useful part.
"""

from __future__ import annotations

import sys

from starlette.types import Message, Send

from service.errors import ModelLoadError


def reporting_startup_failure(send: Send) -> Send:
    """``send`` for the lifespan protocol, with a failed startup caused by a ``ModelLoadError`` told in one line.

    Starlette sends ``lifespan.startup.failed`` from inside its ``except`` block, so the exception is the one being
    handled there.
    """

    async def send_short(message: Message) -> None:
        failure = sys.exc_info()[1]
        if message["type"] == "lifespan.startup.failed" and isinstance(failure, ModelLoadError):
            message = {"type": message["type"], "message": f"startup failed: {failure.message}"}
        await send(message)

    return send_short
