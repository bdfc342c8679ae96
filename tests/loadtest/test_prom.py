"""Server-side view: histogram deltas between two scrapes and PromQL-style quantiles, on real exposition text."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtest.prom import ServerTiming, parse, server_view
from loadtest.stats import Histogram as Buckets

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    # 10 observations <= 1, 30 more <= 2, 10 more <= 4, none above.
    h = Buckets(((1.0, 10.0), (2.0, 40.0), (4.0, 50.0), (INF, 50.0)), sum=90.0, count=50.0)
    assert h.quantile(0.1) == pytest.approx(0.5)  # rank 5 of the first bucket's 10, from 0: 0 + 1 * 5/10
    assert h.quantile(0.2) == pytest.approx(1.0)
    assert h.quantile(0.5) == pytest.approx(1.5)  # rank 25: 15 of 30 into (1, 2]
    assert h.quantile(0.9) == pytest.approx(3.0)  # rank 45: 5 of 10 into (2, 4]
    assert h.quantile(1.0) == pytest.approx(4.0)
    assert h.mean == pytest.approx(1.8)


def test_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    h = Buckets(((1.0, 1.0), (2.0, 2.0), (INF, 10.0)), sum=100.0, count=10.0)
    assert h.quantile(0.99) == 2.0


def test_quantile_of_nothing_is_none() -> None:
    empty = Buckets(((1.0, 0.0), (INF, 0.0)), sum=0.0, count=0.0)
    assert empty.quantile(0.5) is None
    assert empty.mean is None
    with pytest.raises(ValueError, match="outside"):
        empty.quantile(1.5)


def test_delta_subtracts_bucket_by_bucket_and_detects_restarts() -> None:
    before = Buckets(((1.0, 5.0), (INF, 6.0)), sum=4.0, count=6.0)
    after = Buckets(((1.0, 8.0), (INF, 12.0)), sum=20.0, count=12.0)
    delta = after.minus(before)
    assert delta.buckets == ((1.0, 3.0), (INF, 6.0))
    assert delta.count == 6.0
    assert delta.sum == 16.0
    with pytest.raises(ValueError, match="restarted"):
        before.minus(after)
    with pytest.raises(ValueError, match="bounds changed"):
        after.minus(Buckets(((2.0, 5.0), (INF, 6.0)), sum=4.0, count=6.0))


def _registry() -> tuple[CollectorRegistry, Histogram, Histogram]:
    registry = CollectorRegistry()
    batch = Histogram("cnnserve_batch_size", "rows", ["model"], buckets=(1, 2, 4, 8, 16), registry=registry)
    queue = Histogram(
        "cnnserve_queue_duration_seconds", "wait", ["model"], buckets=(0.001, 0.002, 0.004), registry=registry
    )
    return registry, batch, queue


def test_server_view_from_two_real_scrapes() -> None:
    registry, batch, queue = _registry()
    batch.labels("other").observe(16)  # another model's series must be ignored
    batch.labels("m").observe(1)  # before the step: not part of the delta
    before = parse(generate_latest(registry).decode(), "m")
    for rows in (2, 4, 4, 6):
        batch.labels("m").observe(rows)
    for wait in (0.0005, 0.0015, 0.0015, 0.003):
        queue.labels("m").observe(wait)
    after = parse(generate_latest(registry).decode(), "m")
    view = server_view(before, after)
    assert view.source == "cnnserve histograms"
    assert view.batches == 4
    assert view.mean_batch_size == pytest.approx(4.0)  # (2 + 4 + 4 + 6) / 4
    # Queue waits: 1 in (0, 1 ms], 2 in (1, 2 ms], 1 in (2, 4 ms]; median rank 2 -> 1 of 2 into (1, 2] ms.
    assert view.queue_ms is not None
    assert view.queue_ms.p50_ms == pytest.approx(1.5)
    assert view.queue_ms.mean_ms == pytest.approx(1.625)
    assert view.compute_ms is None  # not exposed by this server


TRITON_TEXT = """# TYPE nv_inference_count counter
nv_inference_count{{model="m",version="1"}} {count}
nv_inference_exec_count{{model="m",version="1"}} {execs}
nv_inference_request_success{{model="m",version="1"}} {ok}
nv_inference_queue_duration_us{{model="m",version="1"}} {queue_us}
nv_inference_compute_infer_duration_us{{model="m",version="1"}} {compute_us}
"""


def test_triton_counters_give_means_when_there_are_no_histograms() -> None:
    before = parse(TRITON_TEXT.format(count=10, execs=10, ok=10, queue_us=1000, compute_us=5000), "m")
    after = parse(TRITON_TEXT.format(count=110, execs=35, ok=60, queue_us=11000, compute_us=55000), "m")
    view = server_view(before, after)
    assert view.source == "nv_inference counters"
    assert view.mean_batch_size == pytest.approx(100 / 25)
    assert view.queue_ms == ServerTiming(pytest.approx(10000 / 50 / 1e3))
    assert view.compute_ms == ServerTiming(pytest.approx(50000 / 50 / 1e3))
