"""The gRPC status of each ``ServiceError``, and the one place an RPC is failed with it.

The message is the HTTP error's, word for word; the stable error code (``queue_full``, ``invalid_image``…) and, where
the HTTP answer has one, ``retry-after`` travel as trailing metadata.
"""

from __future__ import annotations

from typing import NoReturn, TypeAlias

import grpc

from service.errors import ServiceError

#: A servicer context (grpc ships no type hints: this is ``Any`` to the type checker).
Context: TypeAlias = grpc.aio.ServicerContext

#: HTTP status → gRPC status, as the gRPC project maps them (grpc/doc/http-grpc-status-mapping.md) where it does.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,  # as gRPC answers a message over its size limit
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
#: Trailing metadata key carrying the error's stable code.
ERROR_CODE_KEY = "cnnserve-error-code"


def grpc_status(err: ServiceError) -> grpc.StatusCode:
    """The gRPC status a client gets for ``err`` (INTERNAL for any server-side failure)."""
    return _CODES.get(err.status_code, grpc.StatusCode.INTERNAL)


def trailers(err: ServiceError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a failed RPC: the error code, and ``retry-after`` when the HTTP answer has one."""
    retry_after = err.headers.get("Retry-After")
    return ((ERROR_CODE_KEY, err.code),) + ((("retry-after", retry_after),) if retry_after else ())


async def abort(context: Context, err: ServiceError) -> NoReturn:
    """End the RPC with ``err``'s status, message and trailers."""
    await context.abort(grpc_status(err), err.message, trailers(err))
    raise AssertionError("grpc's abort() always raises")  # so that a type checker, knowing nothing of grpc, sees it
