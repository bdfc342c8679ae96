"""Each gRPC call's request id, and its access-log line: what the HTTP middleware gives every HTTP request.

The id is the call's ``x-request-id`` metadata when it is fit to echo, else a minted one (``fit_request_id``, as
over HTTP); every log record written while the call is handled carries it. With ``CNNSERVE_ACCESS_LOG`` each call
ends with one line: ``gRPC <method> <status> <ms> ms``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.admission import fit_request_id
from service.grpc_api.status import Context
from service.logs import REQUEST_ID

access_logger = logging.getLogger("cnnserve.access")
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def behavior_kind(handler: grpc.RpcMethodHandler) -> str:
    """Which of a handler's four behaviour fields (``unary_unary``…) holds its behaviour."""
    return next(kind for kind in _KINDS if getattr(handler, kind) is not None)


def metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    """The call's first text metadata value under ``key`` (lower case, as gRPC delivers keys), or None."""
    value = next((v for k, v in details.invocation_metadata or () if k == key), None)
    return value if isinstance(value, str) else None


class CallContext(grpc.aio.ServerInterceptor):
    """Wraps every call's handler to set its request id and, when asked, log it.

    Args:
        access_log: Log one line per call.
    """

    def __init__(self, access_log: bool) -> None:
        self.access_log = access_log

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        rid = fit_request_id((metadata_value(details, "x-request-id") or "").encode()).decode()
        method, log = details.method, self.access_log

        def done(context: Context, started: float) -> None:
            if log:
                code = context.code() or grpc.StatusCode.OK
                access_logger.info("gRPC %s %s %.2f ms", method, code.name, 1e3 * (time.perf_counter() - started))

        kind = behavior_kind(handler)
        inner = getattr(handler, kind)
        if inspect.isasyncgenfunction(inner):  # a streaming answer, written by yielding

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                REQUEST_ID.set(rid)  # each call runs in a task, with a context, of its own: nothing to reset
                started = time.perf_counter()
                try:
                    async for response in inner(request, context):
                        yield response
                finally:
                    done(context, started)

            return handler._replace(**{kind: streaming})

        async def answering(request: Any, context: Context) -> Any:  # one answer, or answers written by the handler
            REQUEST_ID.set(rid)
            started = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                done(context, started)

        return handler._replace(**{kind: answering})
