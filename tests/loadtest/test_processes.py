"""Sharing a step among generator processes, and merging what they measured into one result."""

from __future__ import annotations

from collections import Counter

import pytest

from loadtest.http import Endpoint
from loadtest.payloads import Workload
from loadtest.processes import Share, Step, merge, run_shared, shares
from loadtest.report import summarise
from loadtest.results import ClosedLoad, OpenLoad
from loadtest.step_result import StepResult


def test_a_concurrency_is_split_in_whole_users_and_never_into_empty_processes() -> None:
    assert [s.load for s in shares(ClosedLoad(5), 2, 512, 1000, seed=7)] == [ClosedLoad(3), ClosedLoad(2)]
    assert [s.load for s in shares(ClosedLoad(1), 4, 512, 1000, seed=7)] == [ClosedLoad(1)]
    assert shares(ClosedLoad(3), 2, 512, 1000, seed=7)[1] == Share(ClosedLoad(1), 256, 500, 8)


def test_a_rate_is_split_evenly_with_a_seed_per_process() -> None:
    parts = shares(OpenLoad(900.0, "poisson"), 3, 512, 10_000, seed=0)
    assert [p.load for p in parts] == [OpenLoad(300.0, "poisson")] * 3
    assert [p.seed for p in parts] == [0, 1, 2]  # three different Poisson streams, not one tripled
    assert {(p.max_connections, p.max_requests) for p in parts} == {(170, 3333)}


def test_merged_results_pool_latencies_add_counts_and_keep_the_longest_window() -> None:
    a = StepResult([0.001, 0.002], Counter({"200": 2, "429": 1}), window_s=2.0, window_ok=2, span_s=2.5)
    a.cpu_s, a.lag_sum_s, a.lag_max_s, a.sent, a.max_backlog, a.connections = 0.5, 0.01, 0.004, 3, 1, 2
    b = StepResult([0.003], Counter({"200": 1, "timeout": 2}), window_s=2.1, window_ok=1, span_s=2.2)
    b.cpu_s, b.lag_sum_s, b.lag_max_s, b.sent, b.max_backlog, b.connections = 0.7, 0.02, 0.003, 3, 0, 3
    b.failures.append("x died")
    merged = merge([a, b])
    assert sorted(merged.latencies_s) == [0.001, 0.002, 0.003]
    assert merged.outcomes == Counter({"200": 3, "429": 1, "timeout": 2})
    assert (merged.window_s, merged.span_s, merged.lag_max_s) == (2.1, 2.5, 0.004)
    assert (merged.window_ok, merged.sent, merged.connections, merged.max_backlog) == (3, 6, 5, 1)
    assert merged.cpu_s == pytest.approx(1.2)
    assert merged.failures == ["x died"]
    assert merged.processes == 2


def test_the_generator_warning_is_per_process() -> None:
    """Two processes at 60 % of a core each are not a saturated generator; at 95 % each they are."""
    busy = StepResult([0.001] * 10, Counter({"200": 10}), window_s=1.0, window_ok=10, span_s=1.0, cpu_s=1.2, sent=10,
                      processes=2)  # fmt: skip
    assert not any("bottleneck" in w for w in summarise(ClosedLoad(8), busy, 1, 512).warnings)
    busy.cpu_s = 1.9
    (warning,) = [w for w in summarise(ClosedLoad(8), busy, 1, 512).warnings if "bottleneck" in w]
    assert "190% of 2 cores (one per generator process)" in warning


async def test_a_generator_process_that_fails_is_reported_not_lost() -> None:
    """Nothing listens on the port: each process fails to start its users, and the merged step says so."""
    endpoint = Endpoint("127.0.0.1", 9)
    step = Step(endpoint, Workload("test", (endpoint.request("POST", "/m", b"x"),), 1, 1), 5.0, 0.0, 1.0)
    calls: list[str] = []

    async def note(what: str) -> None:
        calls.append(what)

    result = await run_shared(step, shares(ClosedLoad(2), 2, 8, 100, 0), lambda: note("open"), lambda: note("close"))
    assert calls == ["open", "close"]
    assert result.processes == 2
    assert len(result.failures) == 2
    assert all(f.startswith("generator process ") and "failed: " in f for f in result.failures)
    assert summarise(ClosedLoad(2), result, 1, 8).failure is not None
