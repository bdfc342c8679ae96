"""config.json's ``version_policy`` (Triton's latest / specific / all): parsed naming the field, and honoured: every
selected version serves with its own batcher and statistics, and a request without a version gets the newest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from tiny_models import tiny_config, tiny_model_bytes, write_model

from service.config_model import ConfigError, VersionPolicy
from service.errors import ModelLoadError
from service.metrics import Metrics
from service.model_manager import ModelManager
from service.repository import model_config_from_dict
from service.settings import Settings
from tests.app_client import serving


def repository_with_versions(root: Path, policy: dict[str, Any] | None, versions: tuple[int, ...] = (1, 2, 3)) -> Path:
    """``tiny`` with one version folder per entry of ``versions``, each with its own weights (seed = version)."""
    blobs = {str(v): tiny_model_bytes(seed=v) for v in versions}
    config = tiny_config("tiny", blobs[str(versions[0])])
    config["versions"] = {v: {"sha256": hashlib.sha256(b).hexdigest()} for v, b in blobs.items()}
    if policy is not None:
        config["version_policy"] = policy
    for version, blob in blobs.items():
        write_model(root, "tiny", blob, config, version=version)
    return root


@pytest.mark.parametrize(
    ("policy", "expected", "served"),
    [
        (None, VersionPolicy(), ["3"]),
        ({"latest": {"num_versions": 2}}, VersionPolicy("latest", num_versions=2), ["2", "3"]),
        ({"latest": {}}, VersionPolicy("latest", num_versions=1), ["3"]),
        ({"specific": {"versions": [3, 1, 9]}}, VersionPolicy("specific", versions=(1, 3, 9)), ["1", "3"]),
        ({"all": {}}, VersionPolicy("all"), ["1", "2", "3"]),
    ],
)
def test_policies_parse_and_select(policy: dict[str, Any] | None, expected: VersionPolicy, served: list[str]) -> None:
    document = tiny_config("tiny", b"") | ({} if policy is None else {"version_policy": policy})
    config = model_config_from_dict(document)
    assert config.version_policy == expected
    assert config.version_policy.select(["1", "2", "3"]) == served
    assert model_config_from_dict(config.to_dict()) == config  # what export writes reads back the same
    assert config.triton_config()["version_policy"] == expected.to_json()


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"newest": {}}, "version_policy has keys ['newest'], expected exactly one of 'latest', 'specific', 'all'"),
        ({"latest": {}, "all": {}}, "version_policy has keys ['all', 'latest'], expected exactly one of"),
        ({"latest": {"num_versions": 0}}, "latest.num_versions is 0 (integer), expected an integer from 1 to 16"),
        ({"latest": {"num_versions": 17}}, "latest.num_versions is 17 (integer), expected an integer from 1 to 16"),
        ({"latest": 2}, "version_policy.latest is 2 (integer), expected an object"),
        ({"specific": {"versions": []}}, "version_policy.specific.versions lists 0 versions, expected 1 to 16"),
        ({"specific": {"versions": ["1"]}}, 'specific.versions is ["1"] (list), expected a list of integers >= 1'),
        ({"all": True}, "version_policy.all is true (boolean), expected an object"),
        ([], "version_policy is [] (list), expected an object"),
    ],
)  # fmt: skip
def test_a_bad_policy_is_refused_naming_the_field(policy: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="model 'tiny'") as caught:
        model_config_from_dict(tiny_config("tiny", b"") | {"version_policy": policy})
    assert message in str(caught.value)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app serving versions 1 and 3 of ``tiny`` (``specific``), out of folders 1, 2 and 3."""
    repository = repository_with_versions(tmp_path, {"specific": {"versions": [1, 3]}})
    async with serving(repository, model_control="explicit") as c:
        yield c


def infer_body() -> dict[str, Any]:
    x = np.ones((1, 3, 8, 8), np.float32)
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


async def test_every_selected_version_serves_and_requests_without_one_get_the_newest(
    client: httpx.AsyncClient,
) -> None:
    answers = {}
    for path in ("/v2/models/tiny", "/v2/models/tiny/versions/1", "/v2/models/tiny/versions/3"):
        response = await client.post(f"{path}/infer", json=infer_body())
        assert response.status_code == 200, response.text
        answers[path] = (response.json()["model_version"], response.json()["outputs"][0]["data"])
    assert answers["/v2/models/tiny"] == answers["/v2/models/tiny/versions/3"]
    assert answers["/v2/models/tiny/versions/1"][0] == "1"
    assert answers["/v2/models/tiny/versions/1"][1] != answers["/v2/models/tiny/versions/3"][1]  # other weights
    missing = await client.post("/v2/models/tiny/versions/2/infer", json=infer_body())
    assert missing.status_code == 404
    assert missing.json()["code"] == "version_not_found"
    assert "no version '2' being served; served: ['1', '3']" in missing.json()["error"]
    assert (await client.get("/v2/models/tiny/versions/2/ready")).status_code == 404
    assert (await client.get("/v2/models/tiny/versions/1/ready")).status_code == 200
    metadata = (await client.get("/v2/models/tiny")).json()
    assert metadata["versions"] == ["1", "3"]
    config = (await client.get("/v2/models/tiny/config")).json()
    assert config["version_policy"] == {"specific": {"versions": [1, 3]}}
    stats = (await client.get("/v2/models/tiny/stats")).json()["model_stats"]
    assert [(s["version"], s["inference_count"]) for s in stats] == [("1", 1), ("3", 2)]
    one = (await client.get("/v2/models/tiny/versions/1/stats")).json()["model_stats"]
    assert [(s["version"], s["inference_count"]) for s in one] == [("1", 1)]
    index = (await client.post("/v2/repository/index")).json()
    assert [(row["version"], row["state"]) for row in index] == [("1", "READY"), ("3", "READY")]
    metrics = (await client.get("/metrics")).text
    assert 'nv_inference_count{model="tiny",version="1"} 1.0' in metrics
    assert 'nv_inference_count{model="tiny",version="3"} 2.0' in metrics
    assert metrics.count('cnnserve_queue_depth{model="tiny"}') == 1  # one series per model


async def test_unloading_drops_every_version(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v2/repository/models/tiny/unload")).status_code == 200
    for path in ("/v2/models/tiny/versions/1/ready", "/v2/models/tiny/versions/3/ready"):
        assert (await client.get(path)).status_code == 503
    metrics = (await client.get("/metrics")).text
    assert 'nv_inference_count{model="tiny"' not in metrics
    assert 'cnnserve_queue_depth{model="tiny"}' not in metrics


async def test_a_policy_selecting_no_folder_fails_the_load_naming_the_policy(tmp_path: Path) -> None:
    repository = repository_with_versions(tmp_path, {"specific": {"versions": [7]}}, versions=(1, 2))
    models = ModelManager(Settings(repository_path=repository), Metrics(CollectorRegistry()))
    with pytest.raises(ModelLoadError, match=r"version_policy \{'specific': \{'versions': \[7\]\}\} selects none"):
        await models.load_startup()
    assert models.index()[0]["state"] == "UNAVAILABLE"
    assert "folders holding model.onnx (['1', '2'])" in models.index()[0]["reason"]


async def test_startup_budgets_threads_for_every_served_version_and_reports_a_broken_config(tmp_path: Path) -> None:
    repository = repository_with_versions(tmp_path, {"all": {}})
    config_path = repository / "tiny" / "config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | {"instance_group": {"count": 2}}))
    models = ModelManager(Settings(repository_path=repository), Metrics(CollectorRegistry()))
    assert models._planned_sessions("tiny") == 6  # 2 instances x 3 versions share the CPUs with the other models
    config_path.write_text("{not json")
    assert models._planned_sessions("tiny") == 0
    with pytest.raises(ModelLoadError, match="config.json: not valid JSON"):
        await models.load_startup()
    assert models.index()[0]["state"] == "UNAVAILABLE"
