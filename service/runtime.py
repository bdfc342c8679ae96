"""ONNX Runtime sessions for one model: thread budgets, provider fallback, IOBinding on GPUs, and warm-up.

``ModelRunner`` is the batcher's ``run_batch``: instance ``i`` owns session ``i`` and is only ever called from one
worker thread at a time, so its bound buffers (``service/bound_runner.py``) need no locking.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.bound_runner import BoundSession
from service.buckets import batch_buckets
from service.cpus import cpu_budget
from service.datatypes import V2_TO_NUMPY
from service.providers import GPU_PROVIDERS, ProviderSettings, check_active, provider_options
from service.repository import ConfigError, ModelConfig

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
    path: Path,
    config: ModelConfig,
    providers: list[str],
    prefs: ProviderSettings,
    options: ort.SessionOptions,
    device_id: int = 0,
) -> tuple[ort.InferenceSession, str]:
    """Create one session on GPU ``device_id`` (when a GPU provider runs it) and report where it really runs.

    ORT's own fallback, when a provider cannot start, prints a banner on stdout (breaking JSON logs) and retries
    with CUDA and CPU stripped of their options (``device_id`` back to 0, TF32 and arena settings lost). It is
    turned off here and the chain is walked instead: a provider that fails to start is dropped with one log line,
    the ones after it keep their options, and CPU is tried only if it was chosen (never when a GPU is required).
    A GPU provider that ORT skips without an error (CUDA libraries missing) is caught by ``check_active``.

    When GPU providers were chosen automatically (not demanded), ORT's own error lines about a missing GPU are
    muted: ``check_active`` says it once, clearly.

    Raises:
        ConfigError: a GPU is required and none of the GPU providers started.
        Exception: ORT's error when the last provider failed too (a broken model fails on every provider).
    """
    explicit = bool(prefs.preference or config.execution_providers or prefs.require_gpu)
    remaining = list(providers)
    while True:
        try:
            with _ORT_LOG_LOCK:
                if not explicit:
                    ort.set_default_logger_severity(4)
                try:
                    session = ort.InferenceSession(
                        str(path),
                        options,
                        providers=provider_options(remaining, config, prefs, device_id),
                        enable_fallback=0,
                    )
                finally:
                    ort.set_default_logger_severity(3)
            break
        except (RuntimeError, ValueError) as err:
            failed, remaining = remaining[0], remaining[1:]
            text = str(err).strip()
            reason = text.splitlines()[0] if text else type(err).__name__
            if not remaining:
                if prefs.require_gpu and failed in GPU_PROVIDERS:
                    raise ConfigError(
                        f"model '{config.name}': {failed} could not start ({reason}); refusing to start because a "
                        "GPU is required (CNNSERVE_REQUIRE_GPU)"
                    ) from err
                raise
            logger.warning(
                "model '%s': %s could not start (%s); trying %s with the options asked for",
                config.name, failed, reason, remaining,
            )  # fmt: skip
    return session, check_active(session, providers, config, prefs.require_gpu)


class ModelRunner:
    """Runs merged batches on a model's sessions; ``runner(instance, inputs) -> outputs`` is the batcher's hook.

    Args:
        sessions: One session per instance.
        config: The model's config (tensors, ``max_batch_size`` and its batch buckets).
        device: ``cuda`` runs every batch through its instance's ``BoundSession``: fixed device buffers bound per
            batch bucket, staged through pinned host memory (``service/bound_runner.py``); ``cpu`` calls
            ``session.run``, which reads numpy inputs in place and runs any batch size unpadded. ``cpu`` with
            ``iobinding=True`` exercises the bound path without a GPU (tests).
        device_ids: The GPU of each instance (``instance_group.gpus``); all 0 when not given.
        inline_sessions: One single-threaded CPU session per instance for ``run_inline``. A session with several
            intra-op threads (and spinning off) wakes a sleeping thread on every run, which costs a tiny model
            more than the work it shares: 0.04 ms of a 0.46 ms request here.
        solo_sessions: One session per instance with every core, for a lone request (``run_lone``), run one at a
            time across the workers through ``gate`` (``service/compute_gate.py``). Several workers divide the
            cores, which halves a lone request's speed on two; under load the divided sessions do better.
        gate: Held around every run on a solo session.
    """

    def __init__(
        self,
        sessions: list[ort.InferenceSession],
        config: ModelConfig,
        device: str,
        *,
        device_ids: list[int] | None = None,
        iobinding: bool | None = None,
        inline_sessions: list[ort.InferenceSession] | None = None,
        solo_sessions: list[ort.InferenceSession] | None = None,
        gate: AbstractContextManager[None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.solo_sessions = solo_sessions
        self._gate = gate or contextlib.nullcontext()
        self.inline_sessions = inline_sessions
        self.device = device
        self.device_ids = device_ids or [0] * len(sessions)
        self.buckets = batch_buckets(config.max_batch_size)
        self._output_names = [t.name for t in config.output]
        bound = device == "cuda" if iobinding is None else iobinding
        pairs = zip(sessions, self.device_ids, strict=True)
        self._bound = [BoundSession(s, config, device, gpu) for s, gpu in pairs] if bound else []

    @property
    def iobinding(self) -> bool:
        """Whether batches run through fixed bound buffers (padded to batch buckets)."""
        return bool(self._bound)

    def __call__(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run one batch on session ``instance``."""
        return self._run(instance, inputs)

    def run_lone(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run a lone request on its solo session (the batcher has this way only where there are solo sessions, and
        decides what is lone: one request, nothing queued or announced, the server otherwise quiet)."""
        assert self.solo_sessions is not None, "run_lone needs solo sessions"
        with self._gate:
            return self._outputs(self.solo_sessions[instance], inputs)

    def _run(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        if self._bound:
            return self._bound[instance].run(inputs)
        return self._outputs(self.sessions[instance], inputs)

    def _outputs(
        self, session: ort.InferenceSession, inputs: Mapping[str, npt.NDArray[Any]]
    ) -> dict[str, npt.NDArray[Any]]:
        """``session.run`` on numpy inputs, its outputs by name."""
        return dict(zip(self._output_names, session.run(self._output_names, dict(inputs)), strict=True))

    def staging(self, instance: int, rows: int) -> dict[str, npt.NDArray[Any]] | None:
        """Where the batcher merges a batch of ``rows`` for ``instance``: its staging buffers, when it is bound."""
        return self._bound[instance].staging(rows) if self._bound else None

    def run_inline(self, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run a batch the batcher runs on the event loop: on the single-threaded session when there is one, and
        never through the gate (an event loop must not wait for another process)."""
        if self.inline_sessions is None:
            return self._run(instance, inputs)
        return self._outputs(self.inline_sessions[instance], inputs)

    def warm_up(self, config: ModelConfig) -> int:
        """Run every batch bucket on every instance, so no request pays a first run (cuDNN's algorithm search,
        a CUDA graph's capture) for its shape. Bound sessions only ever run bucket shapes; an unbound CPU session
        runs other sizes too, but its first run of a new shape costs little.

        Returns:
            The number of warm-up runs made.
        """
        return self._warm(self.__call__, config)

    def warm_up_inline(self, config: ModelConfig) -> int:
        """``warm_up`` for the inline sessions (none when there are none)."""
        return 0 if self.inline_sessions is None else self._warm(self.run_inline, config)

    def warm_up_solo(self, config: ModelConfig) -> int:
        """A batch of one on every solo session; returns the runs made. Every bucket would keep batch 32's
        activations in the arena for good (ResNet-18: 150 MiB per worker); another size's first run costs little."""
        for instance in range(len(self.solo_sessions or ())):
            self.run_lone(instance, _zeros(config, 1))
        return len(self.solo_sessions or ())

    def _warm(self, run: Callable[[int, dict[str, npt.NDArray[Any]]], object], config: ModelConfig) -> int:
        runs = 0
        for instance in range(len(self.sessions)):
            for rows in self.buckets:
                # CUDA graphs are captured on a bucket's first runs after ORT's own warm-up runs: run each twice.
                for _ in range(2 if config.optimization.cuda.graphs and self.device == "cuda" else 1):
                    run(instance, _zeros(config, rows))
                    runs += 1
        return runs

    def batch_one_s(self, config: ModelConfig) -> float:
        """Seconds one warm batch-1 run takes on instance 0 (best of three), to judge whether inline runs pay."""
        inputs = _zeros(config, 1)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            self(0, inputs)
            best = min(best, time.perf_counter() - started)
        return best


def _zeros(config: ModelConfig, rows: int) -> dict[str, npt.NDArray[Any]]:
    """A batch of ``rows`` zero rows for every input of the model: warm-up and timing runs."""
    return {t.name: np.zeros((rows, *t.dims), V2_TO_NUMPY[t.datatype]) for t in config.input}
