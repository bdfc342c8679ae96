"""The app's last-resort error handling: an unexpected exception becomes a 500 without internals, on both paths.

Inference requests take the fast path (``service.api.fastpath``), other routes FastAPI's router; either way
the client gets the JSON error shape and the request id, and nothing of the exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.dataplane import DataPlane
from service.main import create_app
from service.model_manager import ModelManager
from service.settings import Settings

SECRET = "secret internals /opt/model.onnx"


@pytest.fixture
async def client(tiny_repository: Callable[..., Path]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(repository_path=tiny_repository(), preprocess_threads=1))
    # raise_app_exceptions: an exception escaping the app would fail the test instead of becoming a 500 here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError(SECRET)


def _assert_plain_500(response: httpx.Response, request_id: str) -> None:
    assert response.status_code == 500
    assert response.headers["x-request-id"] == request_id
    message = f"internal server error; quote request id {request_id} to the operator"
    assert response.json() == {"error": message, "code": "internal"}
    assert SECRET not in response.text


async def test_unhandled_error_on_the_fast_path_is_a_plain_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    meta = (await client.get("/v2/models/tiny")).json()
    tensor = meta["inputs"][0]
    shape = [1, *tensor["shape"][1:]]
    count = 1
    for dim in shape:
        count *= dim
    data = [0] * count
    request = {"inputs": [{"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": data}]}
    assert (await client.post("/v2/models/tiny/infer", json=request)).status_code == 200
    monkeypatch.setattr(DataPlane, "infer", _boom)
    response = await client.post("/v2/models/tiny/infer", json=request, headers={"X-Request-ID": "fast-1"})
    _assert_plain_500(response, "fast-1")
    assert SECRET in caplog.text  # the traceback goes to the log, for the operator


async def test_unhandled_error_on_other_routes_is_a_plain_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await client.get("/v2/models/stats")).status_code == 200
    monkeypatch.setattr(ModelManager, "served", _boom)
    response = await client.get("/v2/models/stats", headers={"X-Request-ID": "slow-1"})
    _assert_plain_500(response, "slow-1")
    assert SECRET in caplog.text
