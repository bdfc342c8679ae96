"""The app's last-resort error handling: an unexpected exception becomes a 500 without internals, on both paths.

Inference requests take the fast path (``service.api.fastpath``), other routes FastAPI's router; either way
the client gets the JSON error shape and the request id, and nothing of the exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.api.middleware import bearer_matches
from service.dataplane import DataPlane
from service.main import create_app
from service.model_manager import ModelManager
from service.settings import Settings
from tests.app_client import serving

SECRET = "secret internals /opt/model.onnx"


@pytest.fixture
async def client(tiny_repository: Callable[..., Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(tiny_repository()) as c:
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


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),  # RFC 7235: the scheme is case-insensitive
        ("BEARER s3cret", 200),
        ("Bearer   s3cret", 200),  # one or more spaces after the scheme
        ("Bearer S3CRET", 401),  # the token itself is not
        ("Basic s3cret", 401),
        ("Bearers3cret", 401),
        ("s3cret", 401),
        ("Bearer s3cret extra", 401),
        (None, 401),
    ],
)
async def test_bearer_scheme_is_case_insensitive_and_the_token_exact(
    tiny_repository: Callable[..., Path], authorization: str | None, status: int
) -> None:
    settings = Settings(repository_path=tiny_repository(), preprocess_threads=1, auth_token="s3cret")
    app = create_app(settings)
    headers = {"Authorization": authorization} if authorization is not None else {}
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        answer = await c.get("/v2/models/tiny", headers=headers)
        assert (await c.get("/v2/health/ready")).status_code == 200  # probes need no token
    assert answer.status_code == status
    if status == 401:
        assert answer.json()["code"] == "unauthorized"
        assert answer.headers["www-authenticate"] == 'Bearer realm="cnnserve"'


@pytest.mark.parametrize(
    ("authorization", "matches"),
    [(b"Bearer s3cret \t", True), (b"Bearer s3cret", True), (b"Bearer s3cret x", False), (b"Bearer  s3cre", False)],
)
def test_blanks_after_the_token_are_not_part_of_it(authorization: bytes, matches: bool) -> None:
    # uvicorn's parser keeps a header value's trailing blanks; RFC 9110 section 5.5 says they are not the value's
    assert bearer_matches(authorization, b"s3cret") is matches
