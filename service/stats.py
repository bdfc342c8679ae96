"""Triton's per-model inference statistics, kept as plain counters and rendered as ``/v2/models/{m}/stats`` JSON.

Counting is a few integer additions per request (no locks: only the event loop writes); the same numbers feed
the Triton-named Prometheus counters at scrape time, so dashboards and ``get_inference_statistics`` agree.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    """A Triton ``StatisticDuration``: how many times, and how many nanoseconds in total."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, times: int = 1) -> None:
        """Count ``times`` events of ``seconds`` each."""
        self.count += times
        self.ns += int(seconds * 1e9) * times

    def to_json(self) -> dict[str, int]:
        """``{"count": …, "ns": …}``."""
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchSizeStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class InferenceStats:
    """One served model version's statistics, in Triton's vocabulary.

    ``success``/``fail`` time whole requests; ``queue`` and the three ``compute_*`` phases are counted per request
    (each request of a batch is charged the batch's phase times, as Triton does); ``batch_stats`` per batch size.
    """

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by Triton failure reason
    batch_stats: dict[int, _BatchSizeStats] = field(default_factory=dict)

    def record_batch(
        self, rows: int, queue_waits_s: tuple[float, ...], merge_s: float, run_s: float, split_s: float
    ) -> None:
        """Account one executed batch of ``rows`` rows made of ``len(queue_waits_s)`` requests."""
        requests = len(queue_waits_s)
        for wait in queue_waits_s:
            self.queue.add(wait)
        self.compute_input.add(merge_s, requests)
        self.compute_infer.add(run_s, requests)
        self.compute_output.add(split_s, requests)
        per_size = self.batch_stats.get(rows)
        if per_size is None:
            per_size = self.batch_stats[rows] = _BatchSizeStats()
        per_size.compute_input.add(merge_s)
        per_size.compute_infer.add(run_s)
        per_size.compute_output.add(split_s)
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)

    def to_triton(self, name: str, version: str) -> dict[str, Any]:
        """One entry of Triton's ``model_stats`` list."""
        empty = Duration().to_json()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_json(),
                "fail": self.fail.to_json(),
                "queue": self.queue.to_json(),
                "compute_input": self.compute_input.to_json(),
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": self.compute_output.to_json(),
                "cache_hit": empty,  # no response cache: always zero, present because clients read it
                "cache_miss": empty,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": s.compute_input.to_json(),
                    "compute_infer": s.compute_infer.to_json(),
                    "compute_output": s.compute_output.to_json(),
                }
                for size, s in sorted(self.batch_stats.items())
            ],
        }
