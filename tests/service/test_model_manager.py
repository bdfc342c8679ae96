"""Loading, reloading and unloading real (tiny) models, and what requests see meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.errors import BadRequest, ModelLoadError, NotFound, ServiceUnavailable
from service.metrics import Metrics
from service.model_manager import ModelManager
from service.settings import Settings


def make_manager(repository: Path, **settings: Any) -> ModelManager:
    return ModelManager(Settings(repository_path=repository, **settings), Metrics(CollectorRegistry()))


async def infer(models: ModelManager, rows: int = 2) -> np.ndarray:
    model = models.get("tiny")
    x = np.ones((rows, 3, 8, 8), np.float32)
    return (await model.batcher.infer({"input": x}, rows))["logits"]


async def test_startup_loads_validates_and_serves(tiny_repository: Callable[..., Path]) -> None:
    models = make_manager(tiny_repository())
    await models.load_startup()
    assert (await infer(models)).shape == (2, 4)
    assert models.index() == [{"name": "tiny", "state": "READY", "reason": "", "version": "1"}]
    with pytest.raises(NotFound, match=r"unknown model 'nope'; the repository holds \['tiny'\]"):
        models.get("nope")
    with pytest.raises(NotFound, match=r"no version '2' being served; served: \['1'\]"):
        models.get("tiny", "2")
    await models.close()


async def test_settings_override_the_configs_batching(tiny_repository: Callable[..., Path]) -> None:
    models = make_manager(tiny_repository(), max_queue_delay_us=1234, max_queue_size=7)
    await models.load_startup()
    model = models.get("tiny")
    assert model.config.dynamic_batching.max_queue_delay_microseconds == 1234
    assert model.config.triton_config()["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 7
    assert model.batcher.policy.max_queue_size == 7
    await models.close()


async def test_a_config_disagreeing_with_its_graph_fails_startup_naming_the_field(
    tiny_repository: Callable[..., Path],
) -> None:
    repository = tiny_repository(output=[{"name": "logits", "data_type": "TYPE_FP32", "dims": [5]}], labels=[])
    models = make_manager(repository)
    with pytest.raises(ModelLoadError, match=r"output\[0\] 'logits': dims\[0\] is 5 but the ONNX graph has 4"):
        await models.load_startup()
    state = models.index()[0]
    assert state["state"] == "UNAVAILABLE"
    assert "dims[0] is 5" in state["reason"]
    with pytest.raises(ServiceUnavailable, match="not ready: UNAVAILABLE"):
        models.get("tiny")


async def test_unload_then_load_again(tiny_repository: Callable[..., Path]) -> None:
    models = make_manager(tiny_repository())
    await models.load_startup()
    await models.unload("tiny")
    with pytest.raises(ServiceUnavailable, match=r"UNAVAILABLE \(unloaded\)"):
        models.get("tiny")
    await models.load("tiny")
    assert (await infer(models, 1)).shape == (1, 4)
    await models.close()


async def test_reload_keeps_answering_and_a_broken_reload_keeps_the_old_version(
    tiny_repository: Callable[..., Path],
) -> None:
    repository = tiny_repository()
    models = make_manager(repository)
    await models.load_startup()
    before = await infer(models)
    flood = [asyncio.ensure_future(infer(models)) for _ in range(20)]
    await models.load("tiny")  # reload while requests are in flight
    for result in await asyncio.gather(*flood):
        np.testing.assert_allclose(result, before, rtol=1e-6)
    config_path = repository / "tiny" / "config.json"
    broken = json.loads(config_path.read_text()) | {"versions": {"1": {"sha256": "0" * 64}}}
    config_path.write_text(json.dumps(broken))
    with pytest.raises(ModelLoadError, match=r"versions\.1\.sha256 is 0{64}"):
        await models.load("tiny")
    np.testing.assert_allclose(await infer(models), before, rtol=1e-6)  # still served
    assert models.index()[0]["state"] == "READY"
    await models.close()


async def test_load_request_config_override_must_name_the_same_model(tiny_repository: Callable[..., Path]) -> None:
    repository = tiny_repository()
    models = make_manager(repository)
    document = json.loads((repository / "tiny" / "config.json").read_text())
    with pytest.raises(BadRequest, match="names model 'other', but the URL loads 'tiny'"):
        await models.load("tiny", override=document | {"name": "other"})
    served = await models.load("tiny", override=document | {"max_batch_size": 3})
    assert served.newest.batcher.policy.max_batch_size == 3
    await models.close()


async def test_fast_cpu_models_get_single_threaded_inline_sessions(tiny_repository: Callable[..., Path]) -> None:
    fast = make_manager(tiny_repository(), intra_op_threads=2)  # the tiny model runs far below 1 ms
    await fast.load_startup()
    runner = fast.get("tiny").runner
    assert runner.inline_sessions is not None
    assert len(runner.inline_sessions) == len(runner.sessions)
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in runner.inline_sessions)
    await fast.close()
    for settings in ({"intra_op_threads": 1}, {"intra_op_threads": 2, "inline_batch_us": 0}):
        plain = make_manager(tiny_repository(), **settings)  # already one thread, or never inline
        await plain.load_startup()
        assert plain.get("tiny").runner.inline_sessions is None
        await plain.close()


@pytest.mark.parametrize("name", [".", "..", "a/b", "x" * 256, "tiny\n", "", "../tiny"])
async def test_a_name_no_model_folder_can_have_is_unknown_before_any_file_is_touched(
    tiny_repository: Callable[..., Path], name: str
) -> None:
    models = make_manager(tiny_repository())
    await models.load_startup()
    refusals = []
    with pytest.raises(NotFound) as caught:
        models.get(name)
    refusals.append(caught.value)
    with pytest.raises(NotFound) as caught:
        await models.load(name)
    refusals.append(caught.value)
    with pytest.raises(NotFound) as caught:
        await models.unload(name)
    refusals.append(caught.value)
    for refusal in refusals:
        assert refusal.code == "model_not_found"
        assert "a model name is 1 to 255 characters" in refusal.message
        assert str(models.repository) not in refusal.message  # no server path echoed
        assert len(refusal.message) < 200  # an over-long name is cut short
    assert models.index() == [{"name": "tiny", "state": "READY", "reason": "", "version": "1"}]
    await models.close()
