"""Every Prometheus metric the service exposes, registered in an injected ``CollectorRegistry`` (no globals).

Latency and batch-size histograms are observed as requests and batches complete (``service/histogram.py``: a
bisect and two additions each); they, and the counters and gauges that are plain integers in the hot path (requests
by outcome, in-flight, queue depth, Triton's ``nv_inference_*``), are read only at scrape time by a custom
collector, so the request path pays a few additions for all of them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.batching.policy import BatchTiming
from service.histogram import HistogramFamily
from service.stats import InferenceStats

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

#: Triton's failure reasons (``nv_inference_request_failure{reason=…}``) for our error codes.
_TRITON_REASON = {"queue_full": "REJECTED", "client_disconnected": "CANCELED", "internal": "BACKEND"}


#: (outcome, reason) series every served model has from its first scrape, at 0 until they happen: a counter series
#: that appears only at its first increment hides that increment from ``rate()``, so a dashboard would miss the
#: first burst of refusals. Other reasons appear when they first occur.
KNOWN_OUTCOMES = (
    ("success", "ok"),
    ("client_error", "bad_request"),
    ("rejected", "queue_full"),
    ("timeout", "deadline_exceeded"),
    ("cancelled", "client_disconnected"),
    ("unavailable", "shutting_down"),
    ("server_error", "internal"),
)
#: The front door's refusal, counted for the whole server process (``Metrics.shed``), likewise there from the start.
SERVER_SHED = ("(server)", "rejected", "overloaded")


_NAMED_OUTCOMES = {429: "rejected", 499: "cancelled", 503: "unavailable", 504: "timeout"}


def outcome_of(status_code: int) -> str:
    """The ``outcome`` label for an HTTP status: success, client_error, rejected, cancelled, timeout, …"""
    if status_code < 400:
        return "success"
    return _NAMED_OUTCOMES.get(status_code, "client_error" if status_code < 500 else "server_error")


class ModelMetrics:
    """One served model's instruments, pre-bound to its labels; the batcher's ``BatchObserver``.

    Args:
        metrics: The owning ``Metrics``.
        model: Model name (label ``model``).
        version: Served version (label ``version`` on the Triton counters).
        queue_depth: Reads the batcher's queued-request count at scrape time.
    """

    def __init__(self, metrics: Metrics, model: str, version: str, queue_depth: Callable[[], int]) -> None:
        self.model = model
        self.version = version
        self.queue_depth = queue_depth
        self.stats = InferenceStats()
        self.inflight = 0
        self._request = metrics.request_seconds.labels(model)
        self._queue = metrics.queue_seconds.labels(model)
        self._preprocess = metrics.preprocess_seconds.labels(model)
        self._compute = metrics.compute_seconds.labels(model)
        self._batch = metrics.batch_size.labels(model)
        self._outcomes = metrics.outcomes

    def on_batch(self, timing: BatchTiming) -> None:
        """Record one executed batch (``BatchObserver``)."""
        self._batch.observe(timing.rows)
        self._compute.observe(timing.run_s)
        for wait in timing.queue_waits_s:
            self._queue.observe(wait)
        self.stats.record_batch(timing.rows, timing.queue_waits_s, timing.merge_s, timing.run_s, timing.split_s)

    def preprocessed(self, seconds: float) -> None:
        """Record the decode + preprocess time of one image."""
        self._preprocess.observe(seconds)

    def succeeded(self, seconds: float) -> None:
        """Record a request answered successfully after ``seconds`` end to end."""
        self._request.observe(seconds)
        self.stats.success.add(seconds)
        self._outcomes[(self.model, "success", "ok")] += 1

    def failed(self, seconds: float, status_code: int, code: str) -> None:
        """Record a request that ended in an error response."""
        self._request.observe(seconds)
        self.stats.fail.add(seconds)
        self.stats.failures[_TRITON_REASON.get(code, "OTHER")] += 1
        self._outcomes[(self.model, outcome_of(status_code), code)] += 1


class Metrics:
    """The service's metrics; build one per app with a fresh registry (tests build their own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.models: dict[tuple[str, str], ModelMetrics] = {}  # by (model, version)
        self.outcomes: Counter[tuple[str, str, str]] = Counter({SERVER_SHED: 0})  # (model, outcome, reason) -> requests
        self.request_seconds = self._histogram("cnnserve_request_duration_seconds", "End-to-end request latency.")
        self.queue_seconds = self._histogram("cnnserve_queue_duration_seconds", "Time requests waited in the queue.")
        self.preprocess_seconds = self._histogram(
            "cnnserve_preprocess_duration_seconds", "Image decode and preprocessing time per image."
        )
        self.compute_seconds = self._histogram("cnnserve_compute_duration_seconds", "Model run time per batch.")
        self.batch_size = HistogramFamily("cnnserve_batch_size", "Rows per executed batch.", BATCH_SIZE_BUCKETS)
        #: Reads the requests the whole process is serving (the front door's admission count) at scrape time.
        self.server_inflight: Callable[[], int] = lambda: 0
        registry.register(_ScrapeTimeCollector(self))

    def _histogram(self, name: str, documentation: str) -> HistogramFamily:
        return HistogramFamily(name, documentation, LATENCY_BUCKETS_S)

    @property
    def histograms(self) -> tuple[HistogramFamily, ...]:
        """Every histogram, in exposition order."""
        return (
            self.request_seconds,
            self.queue_seconds,
            self.preprocess_seconds,
            self.compute_seconds,
            self.batch_size,
        )

    def add_model(self, model: str, version: str, queue_depth: Callable[[], int]) -> ModelMetrics:
        """Instruments for a newly served model version (replacing those of a previous load of that version).

        The ``cnnserve_*`` series are per model (all its versions together); Triton's carry the version too.
        """
        self.models[(model, version)] = ModelMetrics(self, model, version, queue_depth)
        for outcome, reason in KNOWN_OUTCOMES:
            self.outcomes.setdefault((model, outcome, reason), 0)
        return self.models[(model, version)]

    def remove_model(self, model: str, instance: ModelMetrics) -> None:
        """Drop an unloaded version's series, unless a newer load of that version already replaced them.

        The per-model histograms go with the model's last version; its request counts stay (docs/metrics.md).
        """
        key = (model, instance.version)
        if self.models.get(key) is not instance:
            return
        del self.models[key]
        if any(name == model for name, _ in self.models):
            return
        for histogram in self.histograms:
            with contextlib.suppress(KeyError):  # never observed: no series to drop
                histogram.remove(model)

    def shed(self, status_code: int, code: str) -> None:
        """Count a request refused at the front door, before routing: ``model="(server)"``, the limit is the server's.

        One counter addition: it runs for every shed request, when the server is busiest.
        """
        self.outcomes[("(server)", outcome_of(status_code), code)] += 1

    def unknown_model_request(self, status_code: int, code: str) -> None:
        """Count a request that named no servable model (label ``model="(unknown)"`` bounds cardinality)."""
        self.outcomes[("(unknown)", outcome_of(status_code), code)] += 1


class _ScrapeTimeCollector(Collector):
    """Gauges and counters computed from plain integers when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for histogram in self._metrics.histograms:
            yield histogram.collect()
        models = list(self._metrics.models.values())
        requests = CounterMetricFamily(
            "cnnserve_requests", "Requests by model, outcome and reason.", labels=["model", "outcome", "reason"]
        )
        for (model, outcome, reason), count in sorted(self._metrics.outcomes.items()):
            requests.add_metric([model, outcome, reason], count)
        yield requests
        depth = GaugeMetricFamily("cnnserve_queue_depth", "Requests waiting in the queue.", labels=["model"])
        inflight = GaugeMetricFamily("cnnserve_inflight_requests", "Requests being served.", labels=["model"])
        for name in sorted({m.model for m in models}):  # one series per model: its versions summed
            versions = [m for m in models if m.model == name]
            depth.add_metric([name], sum(m.queue_depth() for m in versions))
            inflight.add_metric([name], sum(m.inflight for m in versions))
        yield depth
        yield inflight
        yield GaugeMetricFamily(
            "cnnserve_server_inflight_requests",
            "Requests the server process is serving, health and /metrics excepted (CNNSERVE_MAX_INFLIGHT_REQUESTS "
            "bounds it).",
            value=self._metrics.server_inflight(),
        )
        yield from _triton_metrics(models)


def _triton_metrics(models: list[ModelMetrics]) -> Iterator[Metric]:
    """Triton's names, exactly: client_python would append ``_total`` to a counter, so they are exposed untyped."""
    series: dict[str, tuple[str, Callable[[InferenceStats], int]]] = {
        "nv_inference_request_success": ("Successful requests.", lambda s: s.success.count),
        "nv_inference_count": ("Inferences performed (rows; a batch of 8 counts 8).", lambda s: s.inference_count),
        "nv_inference_exec_count": ("Batches executed.", lambda s: s.execution_count),
        "nv_inference_request_duration_us": ("Cumulative end-to-end request time.", lambda s: s.success.ns // 1000),
        "nv_inference_queue_duration_us": ("Cumulative queue time.", lambda s: s.queue.ns // 1000),
        "nv_inference_compute_input_duration_us": ("Cumulative input time.", lambda s: s.compute_input.ns // 1000),
        "nv_inference_compute_infer_duration_us": ("Cumulative model time.", lambda s: s.compute_infer.ns // 1000),
        "nv_inference_compute_output_duration_us": ("Cumulative output time.", lambda s: s.compute_output.ns // 1000),
    }
    for name, (doc, read) in series.items():
        metric = Metric(name, doc, "unknown")
        for m in models:
            metric.add_sample(name, {"model": m.model, "version": m.version}, read(m.stats))
        yield metric
    failure = Metric("nv_inference_request_failure", "Failed requests by reason.", "unknown")
    pending = GaugeMetricFamily(
        "nv_inference_pending_request_count", "Requests queued, not yet executing.", labels=["model", "version"]
    )
    for m in models:
        for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
            labels = {"model": m.model, "version": m.version, "reason": reason}
            failure.add_sample("nv_inference_request_failure", labels, m.stats.failures[reason])
        pending.add_metric([m.model, m.version], m.queue_depth())
    yield failure
    yield pending
