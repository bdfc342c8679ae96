"""Poll mode's scan, driven one poll at a time (no timers): new models and versions load, removed ones unload, a
changed config.json reloads, and a broken model never takes down what is serving."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from tiny_models import tiny_config, tiny_model_bytes, write_model

from service.errors import NotFound, ServiceUnavailable
from service.metrics import Metrics
from service.model_manager import ModelManager
from service.repository_poll import RepositoryPoller, fingerprint, scan
from service.settings import Settings


@pytest.fixture
async def poller(tiny_repository: Callable[..., Path]) -> AsyncIterator[RepositoryPoller]:
    """``tiny`` loaded, the folder snapshotted; tests call ``poll()`` themselves."""
    models = ModelManager(
        Settings(repository_path=tiny_repository(), model_control="poll"), Metrics(CollectorRegistry())
    )
    polling = RepositoryPoller(models, interval_s=3600)
    polling.snapshot()
    await models.load_startup()
    yield polling
    await models.close()


def states(models: ModelManager) -> list[tuple[str, str | None, str]]:
    return [(row["name"], row.get("version"), row["state"]) for row in models.index()]


async def logits(models: ModelManager, name: str = "tiny") -> np.ndarray:
    x = np.ones((1, 3, 8, 8), np.float32)
    return (await models.get(name).batcher.infer({"input": x}, 1))["logits"]


def rewrite(path: Path, document: dict[str, object]) -> None:
    """Replace a file as an operator's tooling does: write aside, then rename over it."""
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps(document))
    os.replace(aside, path)


async def test_an_unchanged_folder_changes_nothing(poller: RepositoryPoller) -> None:
    before = poller.models.get("tiny")
    await poller.poll()
    assert poller.models.get("tiny") is before


async def test_a_new_model_loads_and_a_removed_one_unloads_and_is_forgotten(poller: RepositoryPoller) -> None:
    models = poller.models
    data = tiny_model_bytes(seed=5)
    write_model(models.repository, "second", data, tiny_config("second", data))
    await poller.poll()
    assert states(models) == [("second", "1", "READY"), ("tiny", "1", "READY")]
    assert (await logits(models, "second")).shape == (1, 4)
    shutil.rmtree(models.repository / "second")
    await poller.poll()
    assert states(models) == [("tiny", "1", "READY")]
    with pytest.raises(NotFound, match="unknown model 'second'"):
        models.get("second")


async def test_a_new_version_is_served_and_the_policy_decides_which(poller: RepositoryPoller) -> None:
    models = poller.models
    folder = models.repository / "tiny"
    data = tiny_model_bytes(seed=2)
    (folder / "2").mkdir()
    (folder / "2" / "model.onnx").write_bytes(data)
    config = json.loads((folder / "config.json").read_text())
    config["versions"]["2"] = {"sha256": hashlib.sha256(data).hexdigest()}
    rewrite(folder / "config.json", config)
    await poller.poll()
    assert states(models) == [("tiny", "2", "READY")]  # latest 1: version 2 replaces version 1
    rewrite(folder / "config.json", config | {"version_policy": {"all": {}}})
    await poller.poll()
    assert states(models) == [("tiny", "1", "READY"), ("tiny", "2", "READY")]
    shutil.rmtree(folder / "2")
    await poller.poll()
    assert states(models) == [("tiny", "1", "READY")]


async def test_a_broken_change_keeps_the_served_version_and_a_broken_new_model_shows_why(
    poller: RepositoryPoller,
) -> None:
    models = poller.models
    before = await logits(models)
    config_path = models.repository / "tiny" / "config.json"
    good = json.loads(config_path.read_text())
    rewrite(config_path, good | {"instance_group": {"count": 100}})
    write_model(models.repository, "broken", b"not onnx", tiny_config("broken", b"not onnx"))
    await poller.poll()
    index = {row["name"]: row for row in models.index()}
    assert index["tiny"]["state"] == "READY"
    assert "reload failed, still serving" in index["tiny"]["reason"]
    assert "instance_group.count is 100" in index["tiny"]["reason"]
    np.testing.assert_allclose(await logits(models), before, rtol=1e-6)
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert index["broken"]["reason"]
    with pytest.raises(ServiceUnavailable, match="model 'broken' is not ready: UNAVAILABLE"):
        models.get("broken")
    await poller.poll()  # nothing changed since: no retry
    assert models.index() == list(index.values())
    rewrite(config_path, good)  # fixed: reloads, and the reason clears
    await poller.poll()
    assert {row["name"]: row["reason"] for row in models.index()}["tiny"] == ""


def test_the_fingerprint_is_stat_only_and_sees_every_file_that_matters(tmp_path: Path) -> None:
    data = tiny_model_bytes()
    folder = write_model(tmp_path, "m", data, tiny_config("m", data))
    (tmp_path / "not a model name").mkdir()
    (tmp_path / "empty").mkdir()
    first = fingerprint(folder)
    assert first is not None
    assert [entry[0] for entry in first] == ["1", "config.json"]
    assert list(scan(tmp_path)) == ["m"]
    (folder / "README").write_text("ignored")
    assert fingerprint(folder) == first
    (folder / "1" / "model.onnx").write_bytes(data + b"\0")
    assert fingerprint(folder) != first
    (folder / "config.json").unlink()
    assert fingerprint(folder) is None
    assert fingerprint(tmp_path / "missing") is None


def test_poll_mode_refuses_a_startup_list_the_first_poll_would_undo() -> None:
    with pytest.raises(ValidationError, match="CNNSERVE_MODELS must be empty when CNNSERVE_MODEL_CONTROL is 'poll'"):
        Settings(model_control="poll", models=("tiny",))
    assert Settings(model_control="explicit", models=("tiny",)).models == ("tiny",)
