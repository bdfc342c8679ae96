"""``ModelStreamInfer``'s own logic, with the data plane replaced: answers in completion order, errors in band, and a
bounded window of outstanding requests whatever the client sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.errors import NotFound
from service.grpc_api import inference
from service.grpc_api.inference import InferencePlane

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")


class Context:
    """Just what the handler asks of a servicer context."""

    def time_remaining(self) -> None:
        return None


class Plane(InferencePlane):
    """Answers each request once the test releases it; fails the ones the test marks."""

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}

    async def _infer(self, request: Any, arrived: float, remaining_s: float | None) -> Any:
        if request.id.startswith("missing"):
            raise NotFound(f"unknown model '{request.model_name}'")
        if request.id.startswith("broken"):
            raise RuntimeError("a defect")
        await self.release.setdefault(request.id, asyncio.Event()).wait()
        return service_pb2.ModelInferResponse(id=request.id, model_name=request.model_name)


async def requests(ids: list[str], pulled: list[str]) -> AsyncIterator[Any]:
    for rid in ids:
        pulled.append(rid)
        yield service_pb2.ModelInferRequest(model_name="m", id=rid)


async def test_answers_come_in_completion_order_and_errors_do_not_end_the_stream() -> None:
    plane, pulled = Plane(), []
    stream = plane.ModelStreamInfer(requests(["a", "b", "missing", "broken"], pulled), Context())
    first, second = await anext(stream), await anext(stream)  # the two refusals, before anything is released
    assert sorted(r.error_message for r in (first, second)) == [
        "internal server error serving ModelStreamInfer; see the server log",
        "unknown model 'm'",
    ]
    assert {r.infer_response.id for r in (first, second)} == {"missing", "broken"}
    statuses = {
        r.infer_response.id: (
            r.infer_response.parameters["grpc_status"].string_param,
            r.infer_response.parameters["cnnserve-error-code"].string_param,
        )
        for r in (first, second)
    }
    assert statuses == {"missing": ("NOT_FOUND", "not_found"), "broken": ("INTERNAL", "internal")}
    plane.release.setdefault("b", asyncio.Event()).set()
    assert (await anext(stream)).infer_response.id == "b"
    plane.release.setdefault("a", asyncio.Event()).set()
    assert (await anext(stream)).infer_response.id == "a"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_client_that_does_not_read_is_not_read_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "STREAM_WINDOW", 4)
    plane, pulled = Plane(), []
    ids = [f"r{i}" for i in range(20)]
    for rid in ids:
        plane.release[rid] = asyncio.Event()
        plane.release[rid].set()  # every request answers at once
    stream = plane.ModelStreamInfer(requests(ids, pulled), Context())
    await anext(stream)  # one answer taken, none more read by the client
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(pulled) <= 4 + 1  # the window, plus the one read and waiting for a slot
    answered = [await anext(stream) for _ in range(19)]
    assert len({r.infer_response.id for r in answered}) == 19
    assert len(pulled) == 20
