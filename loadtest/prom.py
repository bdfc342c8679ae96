"""The server's own view of a load step, from two scrapes of its Prometheus ``/metrics``.

cnnserve exposes histograms (``cnnserve_*``): batch size, queue wait, compute per batch, end to end. Any server
with Triton's counters (Triton itself, cnnserve too) still yields the mean batch size and mean queue and compute
times from ``nv_inference_*`` deltas, so the harness explains other deployments as well.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtest.stats import Histogram

#: cnnserve's histograms, by the name they get in reports.
HISTOGRAMS = {
    "batch_size": "cnnserve_batch_size",
    "queue": "cnnserve_queue_duration_seconds",
    "compute": "cnnserve_compute_duration_seconds",
    "request": "cnnserve_request_duration_seconds",
    "preprocess": "cnnserve_preprocess_duration_seconds",
}
#: Triton's cumulative counters (integers; durations in microseconds).
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)


@dataclass(frozen=True)
class ServerTiming:
    """One of the server's durations over a step, in ms: percentiles from its histograms, or only a mean.

    Triton's counters give sums, not distributions, so a server exposing only those yields ``p50_ms`` and
    ``p99_ms`` of None.
    """

    mean_ms: float
    p50_ms: float | None = None
    p99_ms: float | None = None

    def to_dict(self) -> dict[str, float]:
        if self.p50_ms is None or self.p99_ms is None:
            return {"mean": self.mean_ms}
        return {"mean": self.mean_ms, "p50": self.p50_ms, "p99": self.p99_ms}

    @classmethod
    def from_dict(cls, data: dict[str, float] | None) -> ServerTiming | None:
        return None if data is None else cls(data["mean"], data.get("p50"), data.get("p99"))


@dataclass(frozen=True)
class ServerView:
    """What the server saw between the scrapes around a step; None where it does not expose the series."""

    source: str  # "cnnserve histograms", "nv_inference counters" or "no batch metrics"
    requests: float
    batches: float
    mean_batch_size: float | None
    queue_ms: ServerTiming | None
    compute_ms: ServerTiming | None
    request_ms: ServerTiming | None = None
    preprocess_ms: ServerTiming | None = None

    def to_dict(self) -> dict[str, Any]:
        def timing(value: ServerTiming | None) -> dict[str, float] | None:
            return None if value is None else value.to_dict()

        return {
            "source": self.source,
            "requests": self.requests,
            "batches": self.batches,
            "mean_batch_size": self.mean_batch_size,
            "queue_ms": timing(self.queue_ms),
            "compute_ms": timing(self.compute_ms),
            "request_ms": timing(self.request_ms),
            "preprocess_ms": timing(self.preprocess_ms),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerView:
        timings = (
            ServerTiming.from_dict(data[key]) for key in ("queue_ms", "compute_ms", "request_ms", "preprocess_ms")
        )
        return cls(data["source"], data["requests"], data["batches"], data["mean_batch_size"], *timings)


@dataclass(frozen=True)
class Snapshot:
    """One scrape, narrowed to one model: its histograms by metric name, and Triton counters."""

    histograms: dict[str, Histogram] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)


def parse(text: str, model: str) -> Snapshot:
    """Read the series labelled ``model="<model>"`` out of Prometheus text format.

    Raises:
        ValueError: the text is not Prometheus exposition format.
    """
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    counters: dict[str, float] = defaultdict(float)
    wanted = set(HISTOGRAMS.values())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if family.name in wanted:
                if sample.name.endswith("_bucket"):
                    buckets[family.name].append((float(sample.labels["le"]), float(sample.value)))
                elif sample.name.endswith("_sum"):
                    sums[family.name] = float(sample.value)
                elif sample.name.endswith("_count"):
                    counts[family.name] = float(sample.value)
            elif family.name in COUNTERS and sample.name in (family.name, family.name + "_total"):
                # Triton types these as counters, which the parser renames *_total; cnnserve leaves them untyped.
                counters[family.name] += float(sample.value)  # summed over versions
    histograms = {
        name: Histogram(tuple(sorted(b)), sums.get(name, 0.0), counts.get(name, 0.0)) for name, b in buckets.items()
    }
    return Snapshot(histograms, dict(counters))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


def _timing(histogram: Histogram | None) -> ServerTiming | None:
    """Mean, p50 and p99 of a histogram's delta, in ms; None without observations."""
    if histogram is None or histogram.count == 0 or histogram.mean is None:
        return None
    return ServerTiming(1e3 * histogram.mean, _ms(histogram.quantile(0.5)), _ms(histogram.quantile(0.99)))


def server_view(before: Snapshot, after: Snapshot) -> ServerView:
    """What the server saw between two scrapes: mean batch size, queue-wait and compute percentiles.

    Raises:
        ValueError: a histogram's counts went down in between (a restart, or per-worker counters).
    """
    # A labelled series appears at its first observation: absent before the step means zero before it.
    deltas = {
        key: after.histograms[name].minus(before.histograms[name])
        if name in before.histograms
        else after.histograms[name]
        for key, name in HISTOGRAMS.items()
        if name in after.histograms
    }
    counters = {name: after.counters.get(name, 0.0) - before.counters.get(name, 0.0) for name in COUNTERS}
    batch = deltas.get("batch_size")
    executions = counters["nv_inference_exec_count"]
    successes = counters["nv_inference_request_success"]
    if batch is not None and batch.count > 0:
        mean_batch, batches, source = batch.mean, batch.count, "cnnserve histograms"
    elif executions > 0:
        mean_batch, batches, source = counters["nv_inference_count"] / executions, executions, "nv_inference counters"
    else:
        mean_batch, batches, source = None, 0.0, "no batch metrics"
    queue, compute = _timing(deltas.get("queue")), _timing(deltas.get("compute"))
    if queue is None and successes > 0:
        queue = ServerTiming(counters["nv_inference_queue_duration_us"] / successes / 1e3)
    if compute is None and successes > 0:
        # Triton charges every request of a batch the batch's compute time, so this is a per-request mean.
        compute = ServerTiming(counters["nv_inference_compute_infer_duration_us"] / successes / 1e3)
    return ServerView(
        source=source,
        requests=successes,
        batches=batches,
        mean_batch_size=mean_batch,
        queue_ms=queue,
        compute_ms=compute,
        request_ms=_timing(deltas.get("request")),
        preprocess_ms=_timing(deltas.get("preprocess")),
    )
