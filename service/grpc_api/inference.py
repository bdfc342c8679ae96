"""``ModelInfer`` and ``ModelStreamInfer``: gRPC requests on the same data plane, batcher and admission bound as HTTP.

A request is admitted against the process's in-flight bound (``service/admission.py``) as an HTTP one is at the
front door, resolved, checked (``tensors.py``), queued with the sooner of its ``timeout`` parameter and its gRPC
deadline as the queue deadline, and answered with raw output bytes. A client that cancels (or whose deadline
passes) has its handler cancelled by gRPC, which drops its work from the queue. A stream carries many requests: each
runs as its own task, so requests of one stream batch together, and each response (or error) is written as it
completes, with the request's ``id`` (a refusal: ``error_message``, and the status and error code as parameters);
at most ``STREAM_WINDOW`` of them are outstanding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from tritonclient.grpc import service_pb2

from service.admission import Admission
from service.dataplane import DataPlane
from service.errors import InternalError, ServiceError
from service.grpc_api.status import ERROR_CODE_KEY, Context, abort, grpc_status
from service.grpc_api.tensors import encode_infer_response, parse_infer_request

logger = logging.getLogger(__name__)
#: The parameter of a stream's failed answer naming the status the call would have ended with, had it been unary
#: (``RESOURCE_EXHAUSTED``…); ``ERROR_CODE_KEY`` names the error's stable code, as the unary call's trailer does.
STATUS_KEY = "grpc_status"
#: A stream's queue of finished responses ends with this.
_END = object()
#: Requests of one stream that may be running or answered but not yet sent. Beyond it the stream is not read, so
#: gRPC's flow control holds back a client that sends faster than it reads its answers: memory stays bounded.
STREAM_WINDOW = 256


def _unexpected(rpc: str) -> InternalError:
    """Log the exception being handled (a defect) and return what the client is told instead of its details."""
    logger.exception("unhandled error serving gRPC %s", rpc)
    return InternalError(f"internal server error serving {rpc}; see the server log")


class InferencePlane:
    """The inference RPCs, bound to the data plane and the process's admission bound."""

    plane: DataPlane
    admission: Admission

    async def _infer(
        self, request: service_pb2.ModelInferRequest, arrived: float, remaining_s: float | None
    ) -> service_pb2.ModelInferResponse:
        """Run one request; ``remaining_s`` is what is left of its gRPC deadline (None: no deadline).

        Raises:
            ServiceError: refused (429 admission or queue, 400 bad tensors, 404 unknown model…) or failed.
        """
        policy = self.admission.policy
        if not policy.admit():
            err = self.admission.error
            self.admission.on_shed(err.status_code, err.code)
            raise err
        try:
            plane = self.plane
            served = plane.model(request.model_name, request.model_version or None)
            with plane.track(served):
                parsed = parse_infer_request(request, served.signature)
                deadline_us = None if remaining_s is None else max(1, int(remaining_s * 1e6))
                timeout_us = min((t for t in (parsed.timeout_us, deadline_us) if t), default=None)
                outputs = await plane.infer(
                    served,
                    parsed.inputs,
                    parsed.rows,
                    deadline=plane.deadline(served, arrived, timeout_us),
                    is_gone=None,  # a cancelled RPC cancels this task, which drops the request from the queue
                )
                config = served.config
                return encode_infer_response(
                    config.name, served.version, parsed.id, outputs, parsed.outputs, config.labels
                )
        finally:
            policy.release()

    async def ModelInfer(  # noqa: N802
        self, request: service_pb2.ModelInferRequest, context: Context
    ) -> service_pb2.ModelInferResponse:
        """One inference request."""
        arrived = time.monotonic()
        try:
            return await self._infer(request, arrived, context.time_remaining())
        except ServiceError as err:
            await abort(context, err)
        except Exception:
            await abort(context, _unexpected("ModelInfer"))

    async def ModelStreamInfer(  # noqa: N802
        self, requests: AsyncIterator[service_pb2.ModelInferRequest], context: Context
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        """Many requests on one stream, each answered as soon as it is done; errors are answers, not the end."""
        done: asyncio.Queue[Any] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def answer(request: service_pb2.ModelInferRequest, arrived: float) -> None:
            try:
                response = await self._infer(request, arrived, context.time_remaining())
                done.put_nowait(service_pb2.ModelStreamInferResponse(infer_response=response))
            except Exception as caught:
                err = caught if isinstance(caught, ServiceError) else _unexpected("ModelStreamInfer")
                failed = service_pb2.ModelInferResponse(
                    id=request.id, model_name=request.model_name, model_version=request.model_version
                )
                failed.parameters[ERROR_CODE_KEY].string_param = err.code
                failed.parameters[STATUS_KEY].string_param = grpc_status(err).name
                done.put_nowait(service_pb2.ModelStreamInferResponse(error_message=err.message, infer_response=failed))

        async def read() -> None:
            try:
                async for request in requests:
                    await window.acquire()  # given back once its answer is sent
                    task = asyncio.create_task(answer(request, time.monotonic()))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:  # the client has sent its last request: answer what is under way, then end
                    await asyncio.wait(set(running))
            finally:
                done.put_nowait(_END)  # however reading ended, the writer below stops waiting

        reader = asyncio.create_task(read())
        try:
            while (item := await done.get()) is not _END:
                yield item
                window.release()
            await reader  # re-raises what ended the reading (a broken stream)
        finally:
            for task in (reader, *running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, *running, return_exceptions=True)
