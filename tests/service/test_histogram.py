"""``service.histogram``: the same exposition as prometheus_client's ``Histogram`` for the same observations."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.registry import Collector

from service.histogram import HistogramFamily

BUCKETS = (0.001, 0.01, 0.1, 1.0)
#: On and between the bounds, below the first, past the last: every bucket, including +Inf.
VALUES = (0.0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 1.0, 7.5)


class _Exposes(Collector):
    def __init__(self, family: HistogramFamily) -> None:
        self.family = family

    def collect(self):  # type: ignore[no-untyped-def]
        yield self.family.collect()


def _lines(registry: CollectorRegistry) -> list[str]:
    """The exposition, without the creation timestamps (they differ by when each was made)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_the_exposition_is_prometheus_clients_for_the_same_observations() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h_seconds", "Help.", ["model"], buckets=BUCKETS, registry=theirs)
    family = HistogramFamily("h_seconds", "Help.", BUCKETS)
    ours.register(_Exposes(family))
    for model in ("b", "a"):
        for value in VALUES:
            reference.labels(model).observe(value)
            family.labels(model).observe(value)
    assert _lines(ours) == _lines(theirs)
    created = [line for line in generate_latest(ours).decode().splitlines() if line.startswith("h_seconds_created{")]
    assert len(created) == 2  # one per series, as prometheus_client writes them


def test_observations_from_many_threads_are_all_counted() -> None:
    series = HistogramFamily("h", "Help.", BUCKETS).labels("m")
    per_thread, threads = 20_000, 4

    def observe() -> None:
        for _ in range(per_thread):
            series.observe(0.05)

    workers = [threading.Thread(target=observe) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counts, total = series.read()
    assert counts == [0, 0, per_thread * threads, 0, 0]
    assert total == pytest.approx(0.05 * per_thread * threads)


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="must increase"):
        HistogramFamily("h", "Help.", (0.1, 0.01))
