"""Repository control over HTTP: a model that fails to load is the server's 500, a bad load request the client's 400;
load and unload answer only in the explicit model control mode (403 otherwise); a model name that cannot be a
folder's is 404 on every route, before any file is touched."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app_client import serving


@pytest.fixture
def repository(tiny_repository: Callable[..., Path]) -> Path:
    return tiny_repository()


@pytest.fixture
async def client(repository: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(repository, model_control="explicit") as c:
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
    assert str(repository) not in error["error"]  # the file is named inside <repository>, not where that is
    assert "<repository>/tiny/1/model.onnx" in error["error"]
    index = (await client.post("/v2/repository/index")).json()
    assert "<repository>/tiny/1/model.onnx" in index[0]["reason"]
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


@pytest.mark.parametrize("mode", ["none", "poll"])
async def test_load_and_unload_are_forbidden_unless_control_is_explicit(repository: Path, mode: str) -> None:
    document = json.loads((repository / "tiny" / "config.json").read_text())
    hostile = document | {"instance_group": {"count": 100}, "dynamic_batching": {"default_queue_policy": {}}}
    async with serving(repository, model_control=mode, repository_poll_s=3600) as client:
        for path, body in (
            ("/v2/repository/models/tiny/unload", {}),
            ("/v2/repository/models/tiny/load", {}),
            ("/v2/repository/models/tiny/load", {"parameters": {"config": json.dumps(hostile)}}),
            ("/v2/repository/models/nope/load", {}),
        ):
            response = await client.post(path, json=body)
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "model_control_disabled"
            assert f"CNNSERVE_MODEL_CONTROL is '{mode}'" in response.json()["error"]
        assert (await client.get("/v2/models/tiny/ready")).status_code == 200  # nothing changed
        assert (await client.get("/v2/models/tiny/config")).json()["instance_group"][0]["count"] == 1
        index = (await client.post("/v2/repository/index")).json()  # read-only: answers in every mode
        assert index == [{"name": "tiny", "state": "READY", "reason": "", "version": "1"}]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("instance_group", {"count": 100}, "instance_group.count is 100 (integer), expected an integer from 1 to 16"),
        ("max_batch_size", 10**6, "max_batch_size is 1000000 (integer), expected an integer from 1 to 1024"),
        (
            "dynamic_batching",
            {"default_queue_policy": {"max_queue_size": 10**9}},
            "dynamic_batching.default_queue_policy.max_queue_size is 1000000000 (integer), expected an integer "
            "from 1 to 16384",
        ),
        (
            "dynamic_batching",
            {"max_queue_delay_microseconds": 10**8},
            "max_queue_delay_microseconds is 100000000 (integer), expected an integer from 0 to 1000000",
        ),
        (
            "dynamic_batching",
            {"default_queue_policy": {"default_timeout_microseconds": 10**12}},
            "default_timeout_microseconds is 1000000000000 (integer), expected an integer from 0 to 600000000",
        ),
        ("dynamic_batching", {"preferred_batch_size": [1] * 17}, "preferred_batch_size has 17 sizes, at most 16"),
        ("version_policy", {"latest": {"num_versions": 99}}, "num_versions is 99 (integer), expected an integer from"),
    ],
)
async def test_a_load_override_beyond_a_bound_is_refused_naming_field_value_and_bound(
    client: httpx.AsyncClient, repository: Path, field: str, value: Any, message: str
) -> None:
    document = json.loads((repository / "tiny" / "config.json").read_text())
    response = await client.post(
        "/v2/repository/models/tiny/load", json={"parameters": {"config": document | {field: value}}}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "model_load_failed"
    assert message in response.json()["error"]
    assert (await client.get("/v2/models/tiny/config")).json()["max_batch_size"] == 8  # nothing changed


# httpx removes literal '.' and '..' segments; tests/integration/test_model_control.py sends them raw.
BAD_NAMES = ["%2e", "%2e%2e", "x" * 300, "a%2Fb", "%00", "tiny%0A"]
ROUTES = [
    ("GET", "/v2/models/{m}/ready"),
    ("GET", "/v2/models/{m}/versions/1/ready"),
    ("GET", "/v2/models/{m}"),
    ("GET", "/v2/models/{m}/config"),
    ("GET", "/v2/models/{m}/stats"),
    ("POST", "/v2/models/{m}/infer"),
    ("POST", "/v1/models/{m}/classify"),
    ("POST", "/v1/models/{m}:predict"),
    ("POST", "/v2/repository/models/{m}/load"),
    ("POST", "/v2/repository/models/{m}/unload"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_a_name_no_folder_can_have_is_404_on_every_route_without_echoing_paths(
    client: httpx.AsyncClient, repository: Path, name: str
) -> None:
    (repository / "config.json").write_text(json.dumps({"name": "..", "max_batch_size": 1}))  # bait for '..'
    for method, template in ROUTES:
        response = await client.request(method, template.replace("{m}", name), content=b"{}")
        assert response.status_code == 404, (method, template, response.text)
        error = response.json()
        assert error["code"] in ("model_not_found", "not_found"), error  # not_found: a '/' makes it another route
        assert str(repository) not in error["error"]
        assert len(error["error"]) < 300
    assert (await client.get("/v2/models/tiny/ready")).status_code == 200
