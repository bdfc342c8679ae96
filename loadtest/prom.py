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


def server_view(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """What the server saw between two scrapes: mean batch size, queue-wait and compute percentiles.

    Returns:
        ``{"requests", "batches", "mean_batch_size", "queue_ms": {...}, "compute_ms": {...}, "request_ms":
        {...}, "source"}`` with None where the server does not expose the series.
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

    def summary(key: str) -> dict[str, float | None] | None:
        histogram = deltas.get(key)
        if histogram is None or histogram.count == 0:
            return None
        return {
            "mean": _ms(histogram.mean),
            "p50": _ms(histogram.quantile(0.5)),
            "p99": _ms(histogram.quantile(0.99)),
        }

    batch = deltas.get("batch_size")
    executions = counters["nv_inference_exec_count"]
    successes = counters["nv_inference_request_success"]
    if batch is not None and batch.count > 0:
        mean_batch, batches, source = batch.mean, batch.count, "cnnserve histograms"
    elif executions > 0:
        mean_batch, batches, source = counters["nv_inference_count"] / executions, executions, "nv_inference counters"
    else:
        mean_batch, batches, source = None, 0.0, "no batch metrics"
    view: dict[str, Any] = {
        "source": source,
        "requests": successes,
        "batches": batches,
        "mean_batch_size": mean_batch,
        "queue_ms": summary("queue"),
        "compute_ms": summary("compute"),
        "request_ms": summary("request"),
        "preprocess_ms": summary("preprocess"),
    }
    if view["queue_ms"] is None and successes > 0:
        view["queue_ms"] = {"mean": counters["nv_inference_queue_duration_us"] / successes / 1e3}
    if view["compute_ms"] is None and successes > 0:
        # Triton charges every request of a batch the batch's compute time, so this is a per-request mean.
        view["compute_ms"] = {"mean": counters["nv_inference_compute_infer_duration_us"] / successes / 1e3}
    return view
