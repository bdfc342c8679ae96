"""A fake KServe v2 gRPC server on 127.0.0.1 for the harness's gRPC tests, with its faults as knobs, behind a TCP
proxy that can cut every connection or refuse new ones, as a crashed or restarted server would.

It answers ``ModelInfer`` and ``ModelStreamInfer`` with an empty response, or with the status or in-band stream
error it is told to; ``answers_left`` holds answers back until ``release()`` so a test can keep requests in flight
while it cuts the connections, instead of racing the clock. The harness's lanes and loops under test are the real
ones; tests compare their counts with what the fake counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtest.grpc_target import GrpcTarget

METADATA = service_pb2.ModelMetadataResponse(
    name="m",
    inputs=[service_pb2.ModelMetadataResponse.TensorMetadata(name="input", datatype="FP32", shape=[-1, 1, 4, 4])],
    outputs=[service_pb2.ModelMetadataResponse.TensorMetadata(name="logits", datatype="FP32", shape=[-1, 10])],
)


@dataclass
class FakeGrpc(service_pb2_grpc.GRPCInferenceServiceServicer):
    """How the fake behaves, and what it saw."""

    status: grpc.StatusCode = grpc.StatusCode.OK  # a unary call, or a whole stream, ends with this status
    stream_error: str = ""  # each stream answer carries this in-band error_message
    stream_status: str = ""  # ... and names this gRPC status in its grpc_status parameter, as cnnserve's do
    end_stream_after: int | None = None  # a stream is ended (status OK) on the request after this many answers
    answers_left: int | None = None  # answer this many more requests, then hold the rest until release()
    requests: int = 0  # inference requests read, unary or streamed
    served: int = 0  # answers written
    streams: int = 0  # streams opened
    inputs: list[service_pb2.ModelInferRequest] = field(default_factory=list)  # the first few requests read
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Answer every request from now on (ends ``answers_left``)."""
        self.answers_left = None
        self._changed.set()

    async def until(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` holds; it is checked whenever a request arrives or is answered."""
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    async def _answer(self, request: service_pb2.ModelInferRequest) -> None:
        """Count ``request``; return once it may be answered."""
        self.requests += 1
        if len(self.inputs) < 4:
            self.inputs.append(request)
        self._changed.set()
        await self.until(lambda: self.answers_left != 0)
        if self.answers_left is not None:
            self.answers_left -= 1
        self.served += 1
        self._changed.set()

    async def ModelMetadata(self, request: Any, context: Any) -> service_pb2.ModelMetadataResponse:  # noqa: N802
        if request.name != METADATA.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}")
        return METADATA

    async def ModelInfer(self, request: Any, context: Any) -> service_pb2.ModelInferResponse:  # noqa: N802
        await self._answer(request)
        if self.status is not grpc.StatusCode.OK:
            await context.abort(self.status, "told to fail")
        return service_pb2.ModelInferResponse(model_name=request.model_name)

    async def ModelStreamInfer(  # noqa: N802
        self, requests: Any, context: Any
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        self.streams += 1
        answered = 0
        async for request in requests:
            if answered == self.end_stream_after:
                self.requests += 1
                self._changed.set()
                return
            await self._answer(request)
            if self.status is not grpc.StatusCode.OK:
                await context.abort(self.status, "told to fail")
            answered += 1
            answer = service_pb2.ModelInferResponse(model_name="m")
            if self.stream_status:
                answer.parameters["grpc_status"].string_param = self.stream_status
            yield service_pb2.ModelStreamInferResponse(error_message=self.stream_error, infer_response=answer)


@dataclass
class Proxy:
    """A TCP proxy in front of the fake: ``cut()`` kills every connection through it, ``refusing`` new ones."""

    upstream_port: int
    refusing: bool = False
    accepted: int = 0  # connections accepted and forwarded
    _pipes: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def cut(self) -> None:
        """Reset every connection open now, client and server sides."""
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_writer.transport.abort()
            return
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.accepted += 1
        self._pipes |= {client_writer, server_writer}
        loop = asyncio.get_running_loop()
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            task = loop.create_task(self._pipe(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@asynccontextmanager
async def serve(fake: FakeGrpc, streaming: bool = False) -> AsyncIterator[tuple[GrpcTarget, Proxy]]:
    """Run ``fake`` behind a ``Proxy`` on free ports; yields the target (through the proxy) and the proxy."""
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    proxy = Proxy(port)
    listener = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
    try:
        yield GrpcTarget("127.0.0.1", listener.sockets[0].getsockname()[1], streaming), proxy
    finally:
        listener.close()
        proxy.cut()
        await server.stop(None)
        for task in list(proxy._tasks):
            task.cancel()
        await asyncio.gather(*proxy._tasks, return_exceptions=True)
