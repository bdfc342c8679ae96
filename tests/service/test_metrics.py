"""Metrics exposition from a fresh registry: histograms, scrape-time gauges, Triton's exact metric names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.batching.policy import BatchTiming
from service.metrics import KNOWN_OUTCOMES, Metrics


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_batches_requests_and_failures_are_exposed() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    depth = [3]
    model = metrics.add_model("m", "1", lambda: depth[0])
    model.inflight = 2
    model.on_batch(BatchTiming(rows=5, queue_waits_s=(0.001, 0.002), merge_s=0.0001, run_s=0.004, split_s=0.0001))
    model.on_batch(BatchTiming(rows=1, queue_waits_s=(0.0,), merge_s=0.0, run_s=0.001, split_s=0.0))
    model.succeeded(0.01)
    model.succeeded(0.02)
    model.failed(0.001, 429, "queue_full")
    model.preprocessed(0.003)
    metrics.unknown_model_request(404, "model_not_found")
    s = scrape(registry)
    m = (("model", "m"),)
    mv = (("model", "m"), ("version", "1"))
    assert s[("cnnserve_batch_size_count", m)] == 2
    assert s[("cnnserve_batch_size_bucket", (("le", "1.0"), ("model", "m")))] == 1  # one batch of 1, one of 5
    assert s[("cnnserve_queue_duration_seconds_count", m)] == 3
    assert s[("cnnserve_compute_duration_seconds_sum", m)] == 0.005
    assert s[("cnnserve_request_duration_seconds_count", m)] == 3
    assert s[("cnnserve_preprocess_duration_seconds_count", m)] == 1
    assert s[("cnnserve_queue_depth", m)] == 3
    assert s[("cnnserve_inflight_requests", m)] == 2
    assert s[("cnnserve_requests_total", m + (("outcome", "success"), ("reason", "ok")))] == 2
    assert s[("cnnserve_requests_total", m + (("outcome", "rejected"), ("reason", "queue_full")))] == 1
    unknown = (("model", "(unknown)"), ("outcome", "client_error"), ("reason", "model_not_found"))
    assert s[("cnnserve_requests_total", unknown)] == 1
    assert s[("nv_inference_request_success", mv)] == 2
    assert s[("nv_inference_count", mv)] == 6
    assert s[("nv_inference_exec_count", mv)] == 2
    assert s[("nv_inference_request_duration_us", mv)] == 30000
    assert s[("nv_inference_queue_duration_us", mv)] == 3000
    assert s[("nv_inference_compute_infer_duration_us", mv)] == 2 * 4000 + 1000  # charged per request, as Triton
    assert s[("nv_inference_pending_request_count", mv)] == 3
    assert s[("nv_inference_request_failure", (("model", "m"), ("reason", "REJECTED"), ("version", "1")))] == 1
    stats = model.stats.to_triton("m", "1")
    assert [b["batch_size"] for b in stats["batch_stats"]] == [1, 5]
    assert stats["inference_stats"]["fail"]["count"] == 1


def test_triton_names_are_exposed_exactly_without_a_total_suffix() -> None:
    registry = CollectorRegistry()
    Metrics(registry).add_model("m", "1", lambda: 0)
    text = generate_latest(registry).decode()
    assert '\nnv_inference_request_success{model="m",version="1"} 0.0\n' in text
    assert "nv_inference_request_success_total" not in text


def test_unloading_drops_the_models_series_but_not_a_newer_loads() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    old = metrics.add_model("m", "1", lambda: 0)
    old.on_batch(BatchTiming(1, (0.0,), 0.0, 0.001, 0.0))
    new = metrics.add_model("m", "2", lambda: 0)
    metrics.remove_model("m", old)  # a reload replaced it: nothing to drop
    assert ("nv_inference_count", (("model", "m"), ("version", "2"))) in scrape(registry)
    metrics.remove_model("m", new)
    left = {name for name, labels in scrape(registry) if ("model", "m") in labels}
    assert left == {"cnnserve_requests_total"}, "only the request counts outlive the model"


def test_the_outcomes_a_dashboard_plots_exist_at_zero_before_they_happen() -> None:
    """A counter series born at its first increment hides that increment from rate(): the first 429s would vanish."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert (
        scrape(registry)[
            ("cnnserve_requests_total", (("model", "(server)"), ("outcome", "rejected"), ("reason", "overloaded")))
        ]
        == 0
    )
    metrics.add_model("m", "1", lambda: 0)
    s = scrape(registry)
    for outcome, reason in KNOWN_OUTCOMES:
        assert s[("cnnserve_requests_total", (("model", "m"), ("outcome", outcome), ("reason", reason)))] == 0
    metrics.models[("m", "1")].failed(0.001, 429, "queue_full")
    metrics.shed(429, "overloaded")
    s = scrape(registry)
    assert s[("cnnserve_requests_total", (("model", "m"), ("outcome", "rejected"), ("reason", "queue_full")))] == 1
    assert (
        s[("cnnserve_requests_total", (("model", "(server)"), ("outcome", "rejected"), ("reason", "overloaded")))] == 1
    )
