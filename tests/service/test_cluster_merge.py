"""Merging workers' scrapes and Triton statistics: real ``Metrics`` and ``InferenceStats`` output, exact sums."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.batching.policy import BatchTiming
from service.cluster_merge import merge_model_stats, merge_prometheus, merge_repository_index
from service.metrics import Metrics
from service.stats import InferenceStats

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: bytes) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def worker(shed: int, latencies: tuple[float, ...], rows: tuple[int, ...], extra_model: bool = False) -> Metrics:
    metrics = Metrics(CollectorRegistry())
    model = metrics.add_model("m", "1", lambda: 2)
    for _ in range(shed):
        metrics.shed(429, "overloaded")
    for seconds in latencies:
        model.succeeded(seconds)  # observes cnnserve_request_duration_seconds{model="m"} too
    for n in rows:
        model.on_batch(BatchTiming(rows=n, queue_waits_s=(0.001,), merge_s=0.0, run_s=0.002, split_s=0.0))
    if extra_model:
        metrics.add_model("only_a", "3", lambda: 1).on_batch(
            BatchTiming(rows=4, queue_waits_s=(0.0,), merge_s=0.0, run_s=0.001, split_s=0.0)
        )
    return metrics


def test_scrapes_sum_series_and_keep_one_worker_families() -> None:
    a = generate_latest(worker(2, (0.01, 0.3), (5, 1), extra_model=True).registry).decode()
    b = generate_latest(worker(3, (0.01,), (2,)).registry).decode()
    merged = parse(merge_prometheus([a, b]))
    first, second = parse(a.encode()), parse(b.encode())

    shed = ("cnnserve_requests_total", (("model", "(server)"), ("outcome", "rejected"), ("reason", "overloaded")))
    assert merged[shed] == 5
    ok = ("cnnserve_requests_total", (("model", "m"), ("outcome", "success"), ("reason", "ok")))
    assert merged[ok] == 3
    hist = "cnnserve_request_duration_seconds"
    assert merged[(f"{hist}_count", (("model", "m"),))] == 3
    assert merged[(f"{hist}_sum", (("model", "m"),))] == first[(f"{hist}_sum", (("model", "m"),))] + 0.01
    assert merged[(f"{hist}_bucket", (("le", "0.01"), ("model", "m")))] == 2
    assert merged[(f"{hist}_bucket", (("le", "+Inf"), ("model", "m")))] == 3
    created = (f"{hist}_created", (("model", "m"),))
    assert merged[created] == min(first[created], second[created])
    assert merged[("nv_inference_count", (("model", "m"), ("version", "1")))] == 8
    assert merged[("cnnserve_queue_depth", (("model", "m"),))] == 4
    assert merged[("nv_inference_count", (("model", "only_a"), ("version", "3")))] == 4
    assert set(merged) == set(first) | set(second)


def test_scrape_keeps_names_types_help_and_first_seen_order() -> None:
    a = generate_latest(worker(1, (0.01,), (1,), extra_model=True).registry).decode()
    b = generate_latest(worker(1, (), ()).registry).decode()
    out = merge_prometheus([a, b]).decode()
    assert "# TYPE cnnserve_requests_total counter\n" in out
    assert "# TYPE cnnserve_request_duration_seconds histogram\n" in out
    assert "# TYPE nv_inference_count untyped\n" in out
    assert "# HELP nv_inference_count Inferences performed (rows; a batch of 8 counts 8).\n" in out
    kinds = [(f.name, f.type, f.documentation) for f in text_string_to_metric_families(out)]
    assert kinds == [(f.name, f.type, f.documentation) for f in text_string_to_metric_families(a)]
    names = [s.name for f in text_string_to_metric_families(out) for s in f.samples]
    assert names == [s.name for f in text_string_to_metric_families(a) for s in f.samples]


def test_one_scrape_round_trips_and_none_is_empty() -> None:
    text = generate_latest(worker(2, (0.01,), (3,), extra_model=True).registry).decode()
    assert merge_prometheus([text]).decode() == text
    assert merge_prometheus([]) == b""


def test_model_stats_sum_counts_take_latest_inference_and_merge_batch_sizes() -> None:
    a, b = InferenceStats(), InferenceStats()
    a.record_batch(4, (0.001, 0.002), 0.0001, 0.003, 0.0002)
    a.record_batch(1, (0.001,), 0.0, 0.001, 0.0)
    b.record_batch(4, (0.004,), 0.0002, 0.005, 0.0001)
    b.record_batch(2, (0.001,), 0.0, 0.002, 0.0)
    b.success.add(0.01, 3)
    a.last_inference_ms, b.last_inference_ms = 1_000, 2_000
    only_b = InferenceStats()
    only_b.record_batch(8, (0.0,), 0.0, 0.001, 0.0)
    first, second = a.to_triton("m", "1"), b.to_triton("m", "1")
    merged = merge_model_stats([{"model_stats": [first]}, {"model_stats": [second, only_b.to_triton("other", "2")]}])[
        "model_stats"
    ]

    assert [(e["name"], e["version"]) for e in merged] == [("m", "1"), ("other", "2")]
    entry = merged[0]
    assert entry["last_inference"] == 2_000
    assert entry["inference_count"] == 11
    assert entry["execution_count"] == 4
    stats, one, two = entry["inference_stats"], first["inference_stats"], second["inference_stats"]
    for phase in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit"):
        assert stats[phase] == {
            "count": one[phase]["count"] + two[phase]["count"],
            "ns": one[phase]["ns"] + two[phase]["ns"],
        }
    assert (stats["queue"]["count"], stats["success"]["count"]) == (5, 3)
    assert [batch["batch_size"] for batch in entry["batch_stats"]] == [1, 2, 4]
    four = entry["batch_stats"][2]
    infer_ns = first["batch_stats"][1]["compute_infer"]["ns"] + second["batch_stats"][1]["compute_infer"]["ns"]
    assert four["compute_infer"] == {"count": 2, "ns": infer_ns}
    assert merged[1] == only_b.to_triton("other", "2")


def test_model_stats_of_one_answer_is_unchanged_and_of_none_is_empty() -> None:
    stats = InferenceStats()
    stats.record_batch(3, (0.001,), 0.0, 0.002, 0.0)
    answer = {"model_stats": [stats.to_triton("m", "1")]}
    assert merge_model_stats([answer]) == answer
    assert merge_model_stats([]) == {"model_stats": []}


def _row(name: str, state: str = "READY", version: str | None = "1", reason: str = "") -> dict[str, str]:
    row = {"name": name, "state": state, "reason": reason}
    return row | {"version": version} if version is not None else row


def test_a_model_is_ready_in_the_index_only_where_every_worker_serves_it() -> None:
    a = [_row("m"), _row("m", version="2"), _row("new"), _row("gone")]
    b = [_row("m"), _row("new", "LOADING", None, "loading"), _row("broken", "UNAVAILABLE", None, "bad config")]
    merged = merge_repository_index([a, b], ready_only=False)
    assert merged == [
        _row("m"),
        _row("m", "LOADING", "2", "ready in 1 of 2 workers"),
        _row("new", "LOADING", None, "loading"),  # the worker not done yet speaks for the model
        _row("gone", "UNAVAILABLE", None, "not known to every worker yet"),
        _row("broken", "UNAVAILABLE", None, "bad config"),
    ]
    assert merge_repository_index([a, b], ready_only=True) == [_row("m")]
    assert merge_repository_index([a], ready_only=False) == a  # one worker: its own index
