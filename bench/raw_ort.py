"""The physical limit: ONNX Runtime ``session.run`` in-process, images/s per batch size and thread setting.

Sessions are built as the service builds its own (sequential execution, full graph optimisation); the thread
count and intra-op spinning vary, and the best setting is reported. Each point runs for a bounded time and at
least ``min_runs`` times; the per-run latency at batch 1 is what "raw batch-1 latency" means in the bars.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from loadtest.results import Latency
from loadtest.stats import LatencySummary

BATCH_SIZES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class ThreadSetting:
    """ORT intra-op threads and whether idle threads spin."""

    threads: int
    spinning: bool

    @property
    def label(self) -> str:
        return f"{self.threads} thread(s), spinning {'on' if self.spinning else 'off'}"


def session(path: Path, setting: ThreadSetting) -> ort.InferenceSession:
    """A CPU session with ``setting``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = setting.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if setting.spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class RawPoint:
    """One batch size under one thread setting: runs made, images/s, and the latency of a ``session.run``."""

    batch: int
    runs: int
    images_per_s: float
    latency: Latency

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "runs": self.runs,
            "images_per_s": self.images_per_s,
            "latency_ms": self.latency.to_dict(),
        }


@dataclass(frozen=True)
class SettingRuns:
    """One thread setting at every batch size of ``BATCH_SIZES``, in that order."""

    setting: ThreadSetting
    points: tuple[RawPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting.label,
            "threads": self.setting.threads,
            "spinning": self.setting.spinning,
            "points": [point.to_dict() for point in self.points],
        }


@dataclass(frozen=True)
class RawOrt:
    """A model's physical limit: every setting measured, the best one, and the figures the bars divide by."""

    settings: tuple[SettingRuns, ...]
    best: SettingRuns  # the setting with the highest peak images/s
    best_images_per_s: float
    best_batch: int
    batch32_images_per_s: float
    batch1_p50_ms: float  # the lowest of every setting's
    batch1_images_per_s: float
    recheck: tuple[RawPoint, ...] = ()  # the best setting measured again after the servers ran, if it was

    @property
    def batch1_setting(self) -> ThreadSetting:
        """The setting with the lowest batch-1 p50 in the sweep (``batch1_p50_ms`` may come from the re-check)."""
        return _fastest_at_batch1(self.settings).setting

    def to_dict(self) -> dict[str, Any]:
        data = {
            "settings": [runs.to_dict() for runs in self.settings],
            "best_setting": self.best.setting.label,
            "best_threads": self.best.setting.threads,
            "best_spinning": self.best.setting.spinning,
            "best_images_per_s": self.best_images_per_s,
            "best_batch": self.best_batch,
            "batch32_images_per_s": self.batch32_images_per_s,
            "batch1_p50_ms": self.batch1_p50_ms,
            "batch1_images_per_s": self.batch1_images_per_s,
        }
        if self.recheck:
            data["recheck"] = [point.to_dict() for point in self.recheck]
        return data


def _fastest_at_batch1(settings: Sequence[SettingRuns]) -> SettingRuns:
    """The setting whose batch-1 run has the lowest p50."""
    return min(settings, key=lambda runs: runs.points[0].latency.p50_ms)


def measure_point(
    runner: ort.InferenceSession, dims: tuple[int, ...], batch: int, seconds: float, min_runs: int = 3
) -> RawPoint:
    """Run one batch size for ``seconds`` (and at least ``min_runs`` times, at most 100,000) after one warm-up run."""
    name = runner.get_inputs()[0].name
    x = np.random.default_rng(batch).standard_normal((batch, *dims)).astype(np.float32)
    runner.run(None, {name: x})
    times: list[float] = []
    started = time.perf_counter()
    while (len(times) < min_runs or time.perf_counter() - started < seconds) and len(times) < 100_000:
        t0 = time.perf_counter()
        runner.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    summary = LatencySummary.of(times)
    assert summary is not None
    return RawPoint(batch, len(times), batch * len(times) / sum(times), Latency.of(summary))


def measure_model(
    path: Path, dims: tuple[int, ...], settings: list[ThreadSetting], seconds: float, min_runs: int = 3
) -> RawOrt:
    """Every thread setting at every batch size; the best setting is the one with the highest peak images/s."""
    measured: list[SettingRuns] = []
    for setting in settings:
        runner = session(path, setting)
        measured.append(
            SettingRuns(setting, tuple(measure_point(runner, dims, b, seconds, min_runs) for b in BATCH_SIZES))
        )
        del runner
    best = max(measured, key=lambda r: max(p.images_per_s for p in r.points))
    peak = max(best.points, key=lambda p: p.images_per_s)
    batch1 = _fastest_at_batch1(measured).points[0]
    return RawOrt(
        settings=tuple(measured),
        best=best,
        best_images_per_s=peak.images_per_s,
        best_batch=peak.batch,
        batch32_images_per_s=max(p.images_per_s for r in measured for p in r.points if p.batch == 32),
        batch1_p50_ms=batch1.latency.p50_ms,
        batch1_images_per_s=max(r.points[0].images_per_s for r in measured),
    )


def recheck(path: Path, dims: tuple[int, ...], raw: RawOrt, seconds: float, min_runs: int) -> RawOrt:
    """Measure the best setting again at batch 1, its best batch and 32; returns ``raw`` with the better figures.

    The servers run between the two measurements; on a shared machine either one may be disturbed, and the
    physical limit is what the hardware can do, so the maxima (and the lower batch-1 latency) are reported.
    """
    runner = session(path, raw.best.setting)
    points = {b: measure_point(runner, dims, b, seconds, min_runs) for b in sorted({1, raw.best_batch, 32})}
    return replace(
        raw,
        recheck=tuple(points.values()),
        best_images_per_s=max(raw.best_images_per_s, points[raw.best_batch].images_per_s),
        batch32_images_per_s=max(raw.batch32_images_per_s, points[32].images_per_s),
        batch1_images_per_s=max(raw.batch1_images_per_s, points[1].images_per_s),
        batch1_p50_ms=min(raw.batch1_p50_ms, points[1].latency.p50_ms),
    )
