"""Repository control over HTTP: a model that fails to load is the server's 500, a bad load request the client's 400."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.main import create_app
from service.settings import Settings


@pytest.fixture
def repository(tiny_repository: Callable[..., Path]) -> Path:
    return tiny_repository()


@pytest.fixture
async def client(repository: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(repository_path=repository, preprocess_threads=1))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_a_model_that_fails_to_load_is_a_server_error_naming_the_reason(
    client: httpx.AsyncClient, repository: Path
) -> None:
    (repository / "tiny" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    response = await client.post("/v2/repository/models/tiny/load")
    assert response.status_code == 500
    error = response.json()
    assert error["code"] == "model_load_failed"
    assert error["error"].startswith("failed to load model 'tiny': ")
    assert "versions.1.sha256" in error["error"]  # the digest no longer matches the file
    assert (await client.get("/v2/models/tiny/ready")).status_code == 200  # the old version still serves


async def test_an_invalid_config_in_the_load_request_is_a_client_error_naming_the_field(
    client: httpx.AsyncClient, repository: Path
) -> None:
    document = json.loads((repository / "tiny" / "config.json").read_text())
    for config, fragment in (
        (document | {"max_batch_size": 0}, "max_batch_size is 0"),
        (document | {"name": "other"}, "load request config names model 'other', but the URL loads 'tiny'"),
    ):
        response = await client.post(
            "/v2/repository/models/tiny/load", json={"parameters": {"config": json.dumps(config)}}
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "model_load_failed"
        assert "load request" in response.json()["error"]
        assert fragment in response.json()["error"]
    index = (await client.post("/v2/repository/index")).json()
    assert index == [{"name": "tiny", "state": "READY", "reason": "", "version": "1"}]
