"""Closed and open loops against a slow fake server: scheduled-time latency, bounds, warm-up, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_server import FakeServer, serve

from loadtest.closed_loop import ClosedLoop
from loadtest.open_loop import OpenLoop
from loadtest.payloads import Workload


def _workload(fake: FakeServer) -> Workload:
    request = fake.endpoint.request("POST", "/infer", b"x" * 100, {"Content-Type": "application/octet-stream"})
    return Workload("test", (request,), 1, 100)


async def test_open_loop_latency_counts_the_wait_behind_a_slow_server() -> None:
    """50 requests due over 0.5 s against a server taking 20 ms each, one at a time: the queue builds up.

    Measured from the scheduled time, the last request waits ~0.5 s; measured from when it was finally sent (the
    coordinated-omission error) every request would look like ~20 ms.
    """
    async with serve(FakeServer(service_time_s=0.02)) as fake:
        driver = OpenLoop(fake.endpoint, _workload(fake), timeout_s=5.0, max_connections=1)
        driver.start(100.0, poisson=False, seed=0)
        driver.measure(0.5, max_requests=50)
        result = await driver.finish()
    assert result.outcomes == {"200": 50}
    latencies = sorted(result.latencies_s)
    assert latencies[0] < 0.1  # the first request found the server idle
    assert latencies[-1] > 0.35, latencies[-5:]  # ~50 x 20 ms of work, minus 0.5 s of schedule
    assert latencies[len(latencies) // 2] > 0.15  # most of them queued: far above the 20 ms service time
    assert result.max_backlog > 10
    assert result.lag_max_s > 0.3  # the schedule was not slowed down: requests left late, not later-scheduled


async def test_open_loop_keeps_the_schedule_with_enough_connections() -> None:
    async with serve(FakeServer(service_time_s=0.0)) as fake:
        driver = OpenLoop(fake.endpoint, _workload(fake), timeout_s=5.0, max_connections=64)
        driver.start(200.0, poisson=True, seed=1)
        started = time.perf_counter()
        driver.measure(1.0, max_requests=10_000)
        result = await driver.finish()
        elapsed = time.perf_counter() - started
    assert 120 <= result.ok <= 280, result.ok  # Poisson(200) over 1 s
    assert elapsed < 1.5
    assert sorted(result.latencies_s)[len(result.latencies_s) // 2] < 0.05  # an idle server: no queueing


async def test_closed_loop_stops_at_the_request_cap_and_discards_warm_up() -> None:
    async with serve(FakeServer(service_time_s=0.001)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(4)
        await asyncio.sleep(0.2)
        warm = fake.served
        driver.measure(30.0, max_requests=37)
        result = await driver.finish()
        served = fake.served
    assert warm > 10
    assert result.sent == 37
    assert result.outcomes == {"200": 37}
    assert result.ok == 37
    assert served >= warm + 37  # the warm-up requests reached the server but not the report


async def test_closed_loop_stops_at_the_duration() -> None:
    async with serve(FakeServer(service_time_s=0.005)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(2)
        started = time.perf_counter()
        driver.measure(0.3, max_requests=1_000_000)
        result = await driver.finish()
    assert 0.28 < time.perf_counter() - started < 0.6
    assert 0.28 < result.window_s < 0.5
    assert result.window_s <= result.span_s < 0.6
    assert 0 < result.ok < 1_000_000


async def test_unanswered_requests_time_out_and_the_step_still_ends() -> None:
    async with serve(FakeServer(never_answer=True)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=0.2)
        await driver.start(3)
        started = time.perf_counter()
        driver.measure(0.3, max_requests=100)
        result = await driver.finish()
    assert time.perf_counter() - started < 1.5
    assert result.ok == 0
    assert result.outcomes["timeout"] >= 3


async def test_error_statuses_are_counted_not_timed() -> None:
    async with serve(FakeServer(status=429)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=1.0)
        await driver.start(2)
        driver.measure(5.0, max_requests=20)
        result = await driver.finish()
    assert result.outcomes == {"429": 20}
    assert result.latencies_s == []


async def test_server_closing_each_connection_is_followed_by_a_reconnect() -> None:
    async with serve(FakeServer(close_after_response=True)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=1.0)
        await driver.start(2)
        driver.measure(5.0, max_requests=30)
        result = await driver.finish()
    assert result.outcomes["200"] >= 28  # a request racing the close may be lost, never silently
    assert result.completed >= 30


async def test_throughput_counts_answers_inside_the_window_when_latency_exceeds_it() -> None:
    """4 users queue behind a 50 ms-per-request server (20/s, ~200 ms latency) for a 0.5 s window.

    Dividing the window's own requests by the time until the last one answered would understate the rate; the
    answers inside the window (whenever sent) divided by the window give the server's 20/s.
    """
    async with serve(FakeServer(service_time_s=0.05)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(4)
        await asyncio.sleep(0.4)
        driver.measure(0.5, max_requests=1000)
        result = await driver.finish()
    assert 8 <= result.window_ok <= 12
    assert 16 <= result.window_ok / result.window_s <= 24
    assert result.span_s > result.window_s + 0.1  # the window's last requests were answered after it closed
    assert min(result.latencies_s) > 0.1


async def test_closed_loop_warm_up_waits_for_every_user_to_be_answered() -> None:
    """8 users behind a 50 ms-per-request server: the first round takes 0.4 s, far beyond a 0.05 s warm-up."""
    async with serve(FakeServer(service_time_s=0.05)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(8)
        started = time.perf_counter()
        await driver.warm_up(0.05, answers=8)
        assert time.perf_counter() - started > 0.3
        assert fake.served >= 8
        driver.measure(0.3, max_requests=1000)
        result = await driver.finish()
    assert result.window_ok >= 4  # the pipeline was full when the window opened


async def test_window_stays_open_until_a_bursty_server_answers() -> None:
    """A server answering 4 users every 0.3 s (one 'batch' per round) and a 0.1 s window: still measured."""
    async with serve(FakeServer(service_time_s=0.075)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(4)
        await driver.warm_up(0.0, answers=4)
        driver.measure(0.1, max_requests=1000, min_answers=4)
        result = await driver.finish()
    assert result.window_s > 0.2
    assert result.window_ok >= 4
    assert 8 <= result.window_ok / result.window_s <= 18  # the server's 1 / 0.075 s
    assert result.ok >= 1


async def test_a_request_cap_of_one_still_waits_for_its_answer() -> None:
    async with serve(FakeServer(service_time_s=0.05)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(1)
        await driver.warm_up(0.0, answers=1)
        driver.measure(10.0, max_requests=1)
        result = await driver.finish()
    assert result.outcomes == {"200": 1}
    assert result.latencies_s[0] >= 0.05


@pytest.mark.parametrize("duration_s", [0.25, 0.35, 0.45])
async def test_closed_loop_rate_is_not_miscounted_by_bursts(duration_s: float) -> None:
    """8 users answered all at once every 0.2 s: 40/s, whatever the window's length relative to the bursts.

    A window cut at an arbitrary instant would count 1 or 2 bursts in 0.25 s (32/s or 64/s); closing it just after
    an answer keeps whole rounds in it.
    """
    async with serve(FakeServer(burst_period_s=0.2)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(8)
        await driver.warm_up(0.0, answers=8)
        driver.measure(duration_s, max_requests=10_000, min_answers=8)
        result = await driver.finish()
    assert result.window_ok % 8 == 0  # whole bursts only
    assert 34 <= result.window_ok / result.window_s <= 46
