"""The compute gate: one threaded model run at a time across the server's worker processes.

flock locks an open file description, so a second ``ComputeGate`` on the same file in this process stands for a
sibling worker exactly; whether the lock is free is asked without blocking, so no test waits on a clock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tiny_models import tiny_config, tiny_model_bytes

from service import compute_gate
from service.compute_gate import LOCK_NAME, ComputeGate, cpu_gate
from service.peers import PEER_DIR_ENV, WORKER_COUNT_ENV
from service.repository import model_config_from_dict
from service.runtime import ModelRunner, session_options


def held_elsewhere(path: Path) -> bool:
    """Whether some other open file (another worker) holds the lock: asked without waiting."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False


def test_the_gate_is_held_for_the_run_alone(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    gate = ComputeGate(path)
    assert not held_elsewhere(path)
    with gate:
        assert held_elsewhere(path)
    assert not held_elsewhere(path)


def test_threads_of_one_worker_take_turns_too(tmp_path: Path) -> None:
    """flock alone would let a second thread of the same process in (same open file): the mutex keeps it out."""
    gate = ComputeGate(tmp_path / LOCK_NAME)
    entered: list[str] = []

    def second() -> None:
        with gate:
            entered.append("second")

    with gate:
        worker = threading.Thread(target=second)
        worker.start()
        assert gate._mutex.locked()
        assert entered == []  # held here: the second thread cannot be inside, however far it got
    worker.join(timeout=30)
    assert entered == ["second"]
    assert not gate._mutex.locked()


def test_a_failed_run_releases_the_gate(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    gate = ComputeGate(path)
    with pytest.raises(RuntimeError, match="boom"), gate:
        raise RuntimeError("boom")
    assert not held_elsewhere(path)
    assert gate._mutex.acquire(blocking=False)


def test_only_a_multi_worker_server_has_a_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compute_gate.cpu_gate.cache_clear()
    monkeypatch.delenv(PEER_DIR_ENV, raising=False)
    assert cpu_gate() is None
    compute_gate.cpu_gate.cache_clear()
    monkeypatch.setenv(PEER_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(WORKER_COUNT_ENV, "2")
    try:
        assert isinstance(cpu_gate(), ComputeGate)
        assert (tmp_path / LOCK_NAME).exists()
    finally:
        compute_gate.cpu_gate.cache_clear()


def test_lone_requests_run_on_the_solo_session_through_the_gate_and_nothing_else_waits(tmp_path: Path) -> None:
    # ``run_lone`` is what the batcher calls for one request with nothing queued or announced behind it, any rows.
    path = tmp_path / LOCK_NAME
    model = tiny_model_bytes()
    config = model_config_from_dict(tiny_config("tiny", model))

    def session(threads: int) -> ort.InferenceSession:
        return ort.InferenceSession(model, session_options(threads, False), providers=["CPUExecutionProvider"])

    class Watching(ComputeGate):
        """The real gate, noting whether a sibling's probe found it held during each run through it."""

        seen: list[bool] = []

        def __enter__(self) -> None:
            super().__enter__()
            Watching.seen.append(held_elsewhere(path))

    solo = session(2)
    runner = ModelRunner([session(1)], config, "cpu", solo_sessions=[solo], gate=Watching(path))
    one, two = np.ones((1, 3, 8, 8), np.float32), np.ones((2, 3, 8, 8), np.float32)
    expected = solo.run(None, {"input": two})[0]
    np.testing.assert_allclose(runner.run_lone(0, {"input": one})["logits"], expected[:1], rtol=1e-6)
    assert Watching.seen == [True]
    np.testing.assert_allclose(runner(0, {"input": one})["logits"], expected[:1], rtol=1e-6)  # a row with company
    assert Watching.seen == [True]  # ran on the divided session, not through the gate
    np.testing.assert_allclose(runner.run_lone(0, {"input": two})["logits"], expected, rtol=1e-6)  # two rows, lone
    assert Watching.seen == [True, True]
    assert runner.warm_up_solo(config) == 1  # through the gate
    assert Watching.seen == [True] * 3
    sibling = ComputeGate(path)
    with sibling:  # another worker's lone request is running: batches and inline runs must still go ahead at once
        np.testing.assert_allclose(runner(0, {"input": two})["logits"], expected, rtol=1e-6)
        np.testing.assert_allclose(runner.run_inline(0, {"input": two})["logits"], expected, rtol=1e-6)
    assert Watching.seen == [True] * 3
