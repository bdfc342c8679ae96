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

from service.errors import NotFound, ServiceUnavailable
from service.metrics import Metrics
from service.registry import ModelLoadError, ModelRegistry
from service.settings import Settings


def make_registry(repository: Path, **settings: Any) -> ModelRegistry:
    return ModelRegistry(Settings(repository_path=repository, **settings), Metrics(CollectorRegistry()))


async def infer(registry: ModelRegistry, rows: int = 2) -> np.ndarray:
    model = registry.get("tiny")
    x = np.ones((rows, 3, 8, 8), np.float32)
    return (await model.batcher.infer({"input": x}, rows))["logits"]


async def test_startup_loads_validates_and_serves(tiny_repository: Callable[..., Path]) -> None:
    registry = make_registry(tiny_repository())
    await registry.load_startup()
    assert (await infer(registry)).shape == (2, 4)
    assert registry.index() == [{"name": "tiny", "state": "READY", "reason": "", "version": "1"}]
    with pytest.raises(NotFound, match=r"unknown model 'nope'; the repository holds \['tiny'\]"):
        registry.get("nope")
    with pytest.raises(NotFound, match=r"no version '2' being served; served: \['1'\]"):
        registry.get("tiny", "2")
    await registry.close()


async def test_settings_override_the_configs_batching(tiny_repository: Callable[..., Path]) -> None:
    registry = make_registry(tiny_repository(), max_queue_delay_us=1234, max_queue_size=7)
    await registry.load_startup()
    model = registry.get("tiny")
    assert model.config.dynamic_batching.max_queue_delay_microseconds == 1234
    assert model.config.triton_config()["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 7
    assert model.batcher.policy.max_queue_size == 7
    await registry.close()


async def test_a_config_disagreeing_with_its_graph_fails_startup_naming_the_field(
    tiny_repository: Callable[..., Path],
) -> None:
    repository = tiny_repository(output=[{"name": "logits", "data_type": "TYPE_FP32", "dims": [5]}], labels=[])
    registry = make_registry(repository)
    with pytest.raises(ModelLoadError, match=r"output\[0\] 'logits': dims\[0\] is 5 but the ONNX graph has 4"):
        await registry.load_startup()
    state = registry.index()[0]
    assert state["state"] == "UNAVAILABLE"
    assert "dims[0] is 5" in state["reason"]
    with pytest.raises(ServiceUnavailable, match="not ready: UNAVAILABLE"):
        registry.get("tiny")


async def test_unload_then_load_again(tiny_repository: Callable[..., Path]) -> None:
    registry = make_registry(tiny_repository())
    await registry.load_startup()
    await registry.unload("tiny")
    with pytest.raises(ServiceUnavailable, match=r"UNAVAILABLE \(unloaded\)"):
        registry.get("tiny")
    await registry.load("tiny")
    assert (await infer(registry, 1)).shape == (1, 4)
    await registry.close()


async def test_reload_keeps_answering_and_a_broken_reload_keeps_the_old_version(
    tiny_repository: Callable[..., Path],
) -> None:
    repository = tiny_repository()
    registry = make_registry(repository)
    await registry.load_startup()
    before = await infer(registry)
    flood = [asyncio.ensure_future(infer(registry)) for _ in range(20)]
    await registry.load("tiny")  # reload while requests are in flight
    for result in await asyncio.gather(*flood):
        np.testing.assert_allclose(result, before, rtol=1e-6)
    config_path = repository / "tiny" / "config.json"
    broken = json.loads(config_path.read_text()) | {"versions": {"1": {"sha256": "0" * 64}}}
    config_path.write_text(json.dumps(broken))
    with pytest.raises(ModelLoadError, match=r"versions\.1\.sha256 is 0{64}"):
        await registry.load("tiny")
    np.testing.assert_allclose(await infer(registry), before, rtol=1e-6)  # still served
    assert registry.index()[0]["state"] == "READY"
    await registry.close()


async def test_load_request_config_override_must_name_the_same_model(tiny_repository: Callable[..., Path]) -> None:
    repository = tiny_repository()
    registry = make_registry(repository)
    document = json.loads((repository / "tiny" / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="names model 'other', but the URL loads 'tiny'"):
        await registry.load("tiny", override=document | {"name": "other"})
    served = await registry.load("tiny", override=document | {"max_batch_size": 3})
    assert served.batcher.policy.max_batch_size == 3
    await registry.close()


async def test_fast_cpu_models_get_single_threaded_inline_sessions(tiny_repository: Callable[..., Path]) -> None:
    fast = make_registry(tiny_repository(), intra_op_threads=2)  # the tiny model runs far below 1 ms
    await fast.load_startup()
    runner = fast.get("tiny").runner
    assert runner.inline_sessions is not None
    assert len(runner.inline_sessions) == len(runner.sessions)
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in runner.inline_sessions)
    await fast.close()
    for settings in ({"intra_op_threads": 1}, {"intra_op_threads": 2, "inline_batch_us": 0}):
        plain = make_registry(tiny_repository(), **settings)  # already one thread, or never inline
        await plain.load_startup()
        assert plain.get("tiny").runner.inline_sessions is None
        await plain.close()
