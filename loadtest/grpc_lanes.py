"""The lanes of the KServe v2 gRPC transport (``loadtest.grpc_target``): unary ``ModelInfer`` calls, or one
bidirectional ``ModelStreamInfer`` stream, each lane on a channel (an HTTP/2 connection), of its own or shared.

A lane carries one request at a time, as an HTTP keep-alive connection does, so the load loops treat both alike.
Requests are ``ModelInferRequest`` messages serialised once (``loadtest.grpc_payloads``) and sent as bytes; unary
answers are not parsed, stream answers only for their in-band ``error_message``.

A gRPC status is counted as the HTTP status the v2 HTTP endpoint answers for the same condition (the mapping of
grpc/doc/http-grpc-status-mapping.md: RESOURCE_EXHAUSTED is a 429), so a sweep's errors read alike over both
protocols; DEADLINE_EXCEEDED is a ``timeout``, UNAVAILABLE (mostly a connection lost in flight) ``unavailable``,
a stream the server ended with a request in flight ``connection_closed``, an in-band stream error by the status it
names in its ``grpc_status`` parameter (as cnnserve's do), else ``stream_error``. A lane whose connection or stream
broke is closed and replaced, as an HTTP connection is.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import grpc
from tritonclient.grpc import service_pb2

from loadtest.transport import DoneCallback

_SERVICE = "/inference.GRPCInferenceService/"
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_ERROR_NAMES = {grpc.StatusCode.DEADLINE_EXCEEDED: "timeout", grpc.StatusCode.UNAVAILABLE: "unavailable"}
#: What every call carries (the bearer token, when there is one).
Metadata = tuple[tuple[str, str], ...]
_closing: set[asyncio.Task[None]] = set()  # channels being closed: held so that the tasks are not collected


def outcome(code: grpc.StatusCode) -> tuple[int, str | None]:
    """A gRPC status as the report counts it: (HTTP status, None), or (0, error name)."""
    if code in _ERROR_NAMES:
        return 0, _ERROR_NAMES[code]
    return _HTTP_STATUS[code], None


#: The parameter of a refused stream answer naming the status a unary call would have ended with (cnnserve's).
IN_BAND_STATUS = "grpc_status"


def _in_band(response: service_pb2.ModelStreamInferResponse) -> tuple[int, str | None]:
    """A refused stream answer as the report counts it: by the status it names, else as a ``stream_error``."""
    named = response.infer_response.parameters.get(IN_BAND_STATUS)
    code = grpc.StatusCode.__members__.get(named.string_param) if named is not None else None
    return outcome(code) if code is not None and code is not grpc.StatusCode.OK else (0, "stream_error")


class SharedChannel:
    """A channel (one HTTP/2 connection) and the lanes on it; closed once its last lane has left.

    Lanes join while it is still connecting, so lanes opened at once share one connection instead of racing to open
    one each. A lane that saw the connection fail marks it ``broken``: no new lane joins it, and the lanes still on
    it leave as their own calls end.
    """

    def __init__(self, connecting: asyncio.Task[grpc.aio.Channel]) -> None:
        self.connecting = connecting
        self.lanes = 0
        self.broken = False
        self.closed = False

    async def join(self) -> grpc.aio.Channel:
        """The channel, once connected, with one more lane on it.

        Raises:
            ConnectionError: the connection failed (the channel is then broken for every lane).
        """
        self.lanes += 1
        try:
            return await asyncio.shield(self.connecting)
        except BaseException:
            self.lanes -= 1
            self.broken = self.closed = True  # the failed connect closed its channel
            raise

    def leave(self, broken: bool) -> None:
        self.broken |= broken
        self.lanes -= 1
        if self.lanes == 0 and not self.closed:
            self.closed = True
            task = asyncio.get_running_loop().create_task(self.connecting.result().close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)


class _GrpcLane(ABC):
    """What unary and stream lanes share: the channel, the request in flight, the answer, the close."""

    def __init__(
        self, shared: SharedChannel, channel: grpc.aio.Channel, metadata: Metadata, on_done: DoneCallback
    ) -> None:
        self.on_done = on_done
        self.busy = False
        self.scheduled_at = 0.0
        self.alive = True
        self.reason = ""  # the last error's details, for the probe
        self._shared = shared  # joined already
        self._metadata = metadata

    @property
    def usable(self) -> bool:
        return self.alive

    def send(self, request: bytes, scheduled_at: float) -> None:
        assert not self.busy, "send() on a lane still waiting for its answer"
        self.busy = True
        self.scheduled_at = scheduled_at
        if self.alive:
            self._start(request)
        else:
            self._finish(0, "connection_closed")

    def fail(self, error: str) -> None:
        self.close()  # an answer may still come: the lane is not reused, so it cannot be taken for the next one's
        self._finish(0, error)

    def close(self, broken: bool = False) -> None:
        """Leave the channel (``broken``: its connection failed), stopping what is in flight."""
        if self.alive:
            self.alive = False
            self._cancel()
            self._shared.leave(broken)

    @abstractmethod
    def _start(self, request: bytes) -> None:
        """Put ``request`` on the wire."""

    @abstractmethod
    def _cancel(self) -> None:
        """Stop what is in flight on the channel."""

    def _finish(self, status: int, error: str | None) -> None:
        """Report the request in flight (an answer with none in flight, after a failure, is dropped)."""
        if self.busy:
            self.busy = False
            self.on_done(self, status, error)

    def _failed(self, code: grpc.StatusCode, details: str | None) -> None:
        """The exchange ended with ``code``: a lost connection closes the lane before it is reported."""
        self.reason = f"{code.name}: {details}"
        status, error = outcome(code)
        if code is grpc.StatusCode.UNAVAILABLE:
            self.close(broken=True)
        self._finish(status, error)


class UnaryLane(_GrpcLane):
    """``ModelInfer`` calls on one channel, one at a time."""

    def __init__(
        self, shared: SharedChannel, channel: grpc.aio.Channel, metadata: Metadata, on_done: DoneCallback
    ) -> None:
        super().__init__(shared, channel, metadata, on_done)
        self._infer = channel.unary_unary(_SERVICE + "ModelInfer")  # bytes in, bytes out: nothing parsed
        self._task: asyncio.Task[None] | None = None

    def _start(self, request: bytes) -> None:
        self._task = asyncio.get_running_loop().create_task(self._call(request))

    async def _call(self, request: bytes) -> None:
        try:
            await self._infer(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            self._failed(err.code(), err.details())
        else:
            self._finish(200, None)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class StreamLane(_GrpcLane):
    """One ``ModelStreamInfer`` stream on one channel: requests written in turn, each answered before the next."""

    def __init__(
        self, shared: SharedChannel, channel: grpc.aio.Channel, metadata: Metadata, on_done: DoneCallback
    ) -> None:
        super().__init__(shared, channel, metadata, on_done)
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        open_stream = channel.stream_stream(
            _SERVICE + "ModelStreamInfer", response_deserializer=service_pb2.ModelStreamInferResponse.FromString
        )
        self._stream = open_stream(self._requests(), metadata=self._metadata)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def _start(self, request: bytes) -> None:
        self._outgoing.put_nowait(request)

    async def _requests(self) -> AsyncIterator[bytes]:
        while True:
            yield await self._outgoing.get()

    async def _read(self) -> None:
        """Report each answer; when the stream ends, the lane is dead (the request in flight, if any, failed)."""
        code, details = grpc.StatusCode.OK, None
        try:
            async for response in self._stream:
                if response.error_message:
                    self.reason = response.error_message
                    self._finish(*_in_band(response))
                else:
                    self._finish(200, None)
        except grpc.aio.AioRpcError as err:
            code, details = err.code(), err.details()
        except asyncio.CancelledError:
            return  # closed by us
        # First: the loop must not send the next request on this stream when told of the last.
        self.close(broken=code is grpc.StatusCode.UNAVAILABLE)
        if code is grpc.StatusCode.OK:
            self._finish(0, "connection_closed")
        else:
            self._failed(code, details)

    def _cancel(self) -> None:
        self._stream.cancel()
        self._reader.cancel()
