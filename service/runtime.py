"""ONNX Runtime sessions for one model: thread budgets, provider fallback, IOBinding on GPUs, and warm-up.

``ModelRunner`` is the batcher's ``run_batch``: instance ``i`` owns session ``i`` and is only ever called from one
worker thread at a time, so its per-batch-size IOBinding buffers need no locking.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.cpus import cpu_budget
from service.datatypes import V2_TO_NUMPY
from service.providers import ProviderSettings, check_active, provider_options
from service.repository import ModelConfig

logger = logging.getLogger(__name__)
_ORT_LOG_LOCK = threading.Lock()  # ORT's default logger is process-wide


@functools.cache
def available_cpus() -> int:
    """CPUs this process may use: its affinity mask within its cgroup's CPU quota (``service/cpus.py``)."""
    return cpu_budget().usable


def resolved_workers(workers: int | Literal["auto"]) -> int:
    """The worker processes a ``CNNSERVE_WORKERS`` value stands for: ``auto`` is one per usable CPU."""
    return available_cpus() if workers == "auto" else workers


def threads_per_session(total_sessions: int, workers: int | Literal["auto"] = 1, configured: int = 0) -> int:
    """ORT intra-op threads for each session so that all sessions of all workers together fit the CPUs."""
    if configured > 0:
        return configured
    return max(1, available_cpus() // max(1, total_sessions * resolved_workers(workers)))


def session_options(threads: int, allow_spinning: bool) -> ort.SessionOptions:
    """Options for one session: a fixed thread budget, sequential execution, full graph optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


def create_session(
    path: Path, config: ModelConfig, providers: list[str], prefs: ProviderSettings, options: ort.SessionOptions
) -> tuple[ort.InferenceSession, str]:
    """Create one session and report the device it really runs on (``cpu`` or ``cuda``).

    When GPU providers were chosen automatically (not demanded), ORT's own error lines about a missing GPU are
    muted and replaced by one clear warning from ``check_active``.
    """
    explicit = bool(prefs.preference or config.execution_providers or prefs.require_gpu)
    with _ORT_LOG_LOCK:
        if not explicit:
            ort.set_default_logger_severity(4)
        try:
            session = ort.InferenceSession(str(path), options, providers=provider_options(providers, config, prefs))
        finally:
            ort.set_default_logger_severity(3)
    return session, check_active(session, providers, config.name, prefs.require_gpu)


class ModelRunner:
    """Runs merged batches on a model's sessions; ``runner(instance, inputs) -> outputs`` is the batcher's hook.

    Args:
        sessions: One session per instance.
        config: The model's config (output names, dims and data types for the IOBinding buffers).
        device: ``cuda`` binds inputs and outputs to preallocated device buffers per batch size (no per-call
            allocation, one host-to-device copy in and one device-to-host copy out); ``cpu`` calls
            ``session.run``, which reads numpy inputs in place. ``cpu`` with ``iobinding=True`` exercises the
            binding path without a GPU (tests).
        inline_sessions: One single-threaded CPU session per instance for ``run_inline``. A session with several
            intra-op threads (and spinning off) wakes a sleeping thread on every run, which costs a tiny model
            more than the work it shares: 0.04 ms of a 0.46 ms request here.
    """

    def __init__(
        self,
        sessions: list[ort.InferenceSession],
        config: ModelConfig,
        device: str,
        *,
        device_id: int = 0,
        iobinding: bool | None = None,
        inline_sessions: list[ort.InferenceSession] | None = None,
    ) -> None:
        self.sessions = sessions
        self.inline_sessions = inline_sessions
        self.device = device
        self.device_id = device_id
        self.iobinding = device == "cuda" if iobinding is None else iobinding
        self._outputs = [(t.name, t.dims, V2_TO_NUMPY[t.datatype]) for t in config.output]
        self._output_names = [name for name, _, _ in self._outputs]
        self._bound: list[dict[int, tuple[Any, dict[str, Any], list[Any]]]] = [{} for _ in sessions]

    def __call__(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run one batch on session ``instance``; returns the outputs by name."""
        if self.iobinding:
            return self._run_bound(instance, inputs)
        results = self.sessions[instance].run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, results, strict=True))

    def run_inline(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run a batch the batcher runs on the event loop: on the single-threaded session when there is one."""
        if self.inline_sessions is None:
            return self(instance, inputs)
        results = self.inline_sessions[instance].run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, results, strict=True))

    def _buffers(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> tuple[Any, dict[str, Any], list[Any]]:
        rows = next(iter(inputs.values())).shape[0]
        cached = self._bound[instance].get(rows)
        if cached is None:
            session = self.sessions[instance]
            binding = session.io_binding()
            in_values = {}
            for name, array in inputs.items():
                value = ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype, self.device, self.device_id)
                binding.bind_ortvalue_input(name, value)
                in_values[name] = value
            out_values = []
            for name, dims, dtype in self._outputs:
                value = ort.OrtValue.ortvalue_from_shape_and_type((rows, *dims), dtype, self.device, self.device_id)
                binding.bind_ortvalue_output(name, value)
                out_values.append(value)
            cached = self._bound[instance][rows] = (binding, in_values, out_values)
        return cached

    def _run_bound(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        binding, in_values, out_values = self._buffers(instance, inputs)
        for name, array in inputs.items():
            in_values[name].update_inplace(np.ascontiguousarray(array))
        self.sessions[instance].run_with_iobinding(binding)
        # numpy() copies out of the bound buffer, which the next batch of this size overwrites.
        return {name: value.numpy() for name, value in zip(self._output_names, out_values, strict=True)}

    def warm_up(self, config: ModelConfig) -> int:
        """Run every batch size 1..max_batch_size on every instance, so no request pays a first-run cost.

        Returns:
            The number of warm-up runs made.
        """
        return self._warm(self.__call__, config)

    def warm_up_inline(self, config: ModelConfig) -> int:
        """``warm_up`` for the inline sessions (none when there are none)."""
        return 0 if self.inline_sessions is None else self._warm(self.run_inline, config)

    def _warm(self, run: Callable[[int, dict[str, npt.NDArray[Any]]], object], config: ModelConfig) -> int:
        runs = 0
        for instance in range(len(self.sessions)):
            for rows in range(1, config.max_batch_size + 1):
                run(instance, {t.name: np.zeros((rows, *t.dims), V2_TO_NUMPY[t.datatype]) for t in config.input})
                runs += 1
        return runs

    def batch_one_s(self, config: ModelConfig) -> float:
        """Seconds one warm batch-1 run takes on instance 0 (best of three), to judge whether inline runs pay."""
        inputs = {t.name: np.zeros((1, *t.dims), V2_TO_NUMPY[t.datatype]) for t in config.input}
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            self(0, inputs)
            best = min(best, time.perf_counter() - started)
        return best
