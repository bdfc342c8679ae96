"""Closed and open loops against a slow fake server: scheduled-time latency, bounds, warm-up, timeouts, reconnects.

No assertion races the clock: a loaded machine runs every timer late, so counts and rates are checked against
what the fake recorded answering (on the harness's own clock, ``time.perf_counter()``), the fake holds its
answers (``answers_left``) while a window opens or must close without one, and the only time bounds are lower
bounds that follow from the fake's service times (a sleep never ends early).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_server import FakeServer, serve

from loadtest.closed_loop import ClosedLoop
from loadtest.load_loop import LoadLoop
from loadtest.open_loop import OpenLoop
from loadtest.payloads import Workload
from loadtest.report import summarise
from loadtest.results import ClosedLoad, OpenLoad
from loadtest.step_result import StepResult


def _workload(fake: FakeServer) -> Workload:
    request = fake.endpoint.request("POST", "/infer", b"x" * 100, {"Content-Type": "application/octet-stream"})
    return Workload("test", (request,), 1, 100)


def _answered_in_window(fake: FakeServer, driver: LoadLoop, result: StepResult) -> int:
    """How many answers the fake wrote while the measurement window was open."""
    opened = driver.measure_from
    closed = opened + result.window_s
    return sum(opened < at < closed for at in fake.answered_at)


def _assert_window_counts_what_the_server_answered(fake: FakeServer, driver: LoadLoop, result: StepResult) -> None:
    """The window's answers are the ones the one-at-a-time fake wrote inside it, whenever they were asked for.

    The fake held its answers until the window opened, so none straddles its start. One answer written in the
    very turn of the event loop that closed the window reaches the client just after it; the next is a whole
    service time later.
    """
    inside = _answered_in_window(fake, driver, result)
    assert inside - 1 <= result.window_ok <= inside, (result.window_ok, inside)


async def test_open_loop_latency_counts_the_wait_behind_a_slow_server() -> None:
    """Requests due every 10 ms over one connection to a server taking 20 ms each: the queue builds up.

    Measured from the scheduled time, request i waits at least i x 10 ms longer than the first (it was due i x
    10 ms after it and answered at least i x 20 ms after it); measured from when it was finally sent (the
    coordinated-omission error) every request would look like ~20 ms. The window ends at the 50th send, not at a
    duration (a schedule woken late could lose the last request due before it), and the requests queued by then
    go out after it and count too: at least 50, each bound below following from the service time alone.
    """
    async with serve(FakeServer(service_time_s=0.02)) as fake:
        driver = OpenLoop(fake.endpoint, _workload(fake), timeout_s=30.0, max_connections=1)
        driver.start(100.0, poisson=False, seed=0)
        driver.measure(30.0, max_requests=50)
        result = await driver.finish()
    assert result.sent >= 50
    assert result.outcomes == {"200": result.sent}
    latencies = sorted(result.latencies_s)
    assert latencies[-1] - latencies[0] > 0.45, latencies[-5:]  # the 50th waited >= 0.49 s longer than the first
    assert latencies[len(latencies) // 2] > 0.15  # most of them queued: far above the 20 ms service time
    assert result.max_backlog > 10
    assert result.lag_max_s > 0.3  # the schedule was not slowed down: requests left late, not later-scheduled


async def test_open_loop_keeps_the_schedule_with_enough_connections() -> None:
    """The schedule never waits for answers: while the server answers nothing, every due request still goes out.

    With connections to spare, each goes out on a new one as it falls due instead of queueing behind the others.
    """
    async with serve(FakeServer(answers_left=0)) as fake:
        driver = OpenLoop(fake.endpoint, _workload(fake), timeout_s=30.0, max_connections=1000)
        driver.start(200.0, poisson=True, seed=1)
        driver.measure(30.0, max_requests=40)
        await fake.arrived(40)  # the window closed at its 40th send, and not one answer came
        fake.release()
        result = await driver.finish()
    assert result.sent >= 40  # those whose connection was still opening at the 40th go out too
    assert result.max_backlog == 0  # no request waited for a connection
    assert result.connections == result.sent  # one each: none was free again before the window closed
    assert result.outcomes == {"200": result.sent}


async def test_closed_loop_stops_at_the_request_cap_and_discards_warm_up() -> None:
    async with serve(FakeServer(service_time_s=0.001)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(4)
        await driver.warm_up(0.0, answers=11)
        warm = fake.served
        driver.measure(30.0, max_requests=37)
        result = await driver.finish()
        served = fake.served
    assert warm >= 11
    assert result.sent == 37
    assert result.outcomes == {"200": 37}
    assert result.ok == 37
    assert served >= warm + 37  # the warm-up requests reached the server but not the report


async def test_closed_loop_stops_at_the_duration() -> None:
    """The duration closes the window by itself: the fake stops answering after 20 requests, and it still closes.

    A window waiting for an answer would stay open until its backstop, the duration plus the request timeout.
    """
    async with serve(FakeServer(service_time_s=0.005, answers_left=20)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=30.0)
        await driver.start(2)
        driver.measure(0.3, max_requests=1_000_000)
        while driver.issuing:
            await asyncio.sleep(0.01)
        fake.release()  # the requests still in flight are answered now, so the drain can end
        result = await driver.finish()
    assert result.window_s >= 0.3
    assert result.window_s < driver.timeout_s  # closed by the duration, not by the backstop
    assert result.window_s <= result.span_s
    assert result.ok == result.completed == result.sent  # every request sent in the window was answered
    assert result.ok < 1_000_000


async def test_unanswered_requests_time_out_and_the_step_still_ends() -> None:
    """Each user's first request times out, it reconnects and sends again; those 3 time out too and the step ends.

    The drain ends because the requests timed out, not at its backstop (which would leave them 'unfinished'). A
    reconnection slower than the 0.2 s timeout would add a 'connect_failed', but the 3 sent requests time out.
    """
    async with serve(FakeServer(never_answer=True)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=0.2)
        await driver.start(3)
        driver.measure(30.0, max_requests=3)
        result = await driver.finish()
    assert result.ok == 0
    assert result.outcomes["timeout"] == 3
    assert "unfinished" not in result.outcomes


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
    async with serve(FakeServer(service_time_s=0.05, answers_left=8)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(4)
        await driver.warm_up(0.0, answers=8)  # every user answered twice; the fake holds the next answers
        driver.measure(0.5, max_requests=1000)
        fake.release()  # the window's first answers are to requests sent before it
        result = await driver.finish()
    _assert_window_counts_what_the_server_answered(fake, driver, result)
    # Each of the 4 users always has a request queued at the one-at-a-time server: a request waits for the 3
    # others (>= 0.15 s), and the last ones of the window are answered >= 0.15 s after it closed.
    assert result.span_s > result.window_s + 0.1  # the window's last requests were answered after it closed
    assert min(result.latencies_s) > 0.1


async def test_closed_loop_warm_up_waits_for_every_user_to_be_answered() -> None:
    """8 users behind a 50 ms-per-request server: the first round takes 0.4 s, far beyond a 0.05 s warm-up."""
    async with serve(FakeServer(service_time_s=0.05, answers_left=8)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(8)
        started = time.perf_counter()
        await driver.warm_up(0.05, answers=8)
        assert time.perf_counter() - started > 0.3  # 8 answers, one at a time, 50 ms each
        assert fake.served == 8  # every user answered once (the fake holds the next answers)
        driver.measure(0.3, max_requests=1000)
        fake.release()  # the pipeline is full when the window opens: 8 requests queued
        result = await driver.finish()
    _assert_window_counts_what_the_server_answered(fake, driver, result)


async def test_window_stays_open_until_a_bursty_server_answers() -> None:
    """A server answering 4 users every 0.3 s (one 'batch' per round) and a 0.1 s window: still measured."""
    async with serve(FakeServer(service_time_s=0.075, answers_left=4)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(4)
        await driver.warm_up(0.0, answers=4)
        driver.measure(0.1, max_requests=1000, min_answers=4)
        fake.release()  # the window opens on a whole round still to be answered
        result = await driver.finish()
    assert result.window_s > 4 * 0.075  # open until the 4 answers it waits for, 75 ms apart, came in
    assert result.window_ok >= 4
    _assert_window_counts_what_the_server_answered(fake, driver, result)  # at the server's own rate
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
    an answer keeps whole rounds in it. Checked against the rounds the fake recorded answering, not against
    40/s: on a loaded machine every round comes late, and the rate with them.
    """
    async with serve(FakeServer(burst_period_s=0.2, burst_size=8, answers_left=8)) as fake:
        driver = ClosedLoop(fake.endpoint, _workload(fake), timeout_s=5.0)
        await driver.start(8)
        await driver.warm_up(0.0, answers=8)  # the first round; the fake holds the next one
        driver.measure(duration_s, max_requests=10_000, min_answers=8)
        fake.release()  # rounds resume inside the window: none straddles its start
        result = await driver.finish()
    opened = driver.measure_from
    closed = opened + result.window_s
    warm_up, *measured = fake.bursts
    inside = [burst for burst in measured if burst.answered_at < closed]
    after = [burst for burst in measured if burst.answered_at > closed]
    assert [burst.size for burst in fake.bursts] == [8] * len(fake.bursts)  # every round: the 8 users at once
    assert warm_up.answered_at < opened < measured[0].answered_at
    assert inside
    # Whole rounds only: exactly the answers of the rounds the server answered while the window was open.
    assert result.window_ok == sum(burst.size for burst in inside)
    assert after  # the round answering the requests sent in reply to the window's last one (the drain)
    # Closed just after a round that came in past the duration, not at the duration: the users were still
    # sending after it, in reply to the last round counted (perf_counter is the event loop's clock on Linux).
    # A window cut at 0.25 s, 0.35 s or 0.45 s would have stopped them after the round at 0.2 s or 0.4 s.
    assert after[0].asked_at > opened + duration_s
    # The rate the harness reports: the rounds the server really answered in the window, over the window.
    report = summarise(ClosedLoad(8), result, images_per_request=1, max_connections=8)
    assert report.throughput_rps == sum(burst.size for burst in inside) / result.window_s


async def test_a_schedule_that_dies_ends_the_step_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure inside the generator (injected: the 5th submission raises) must end the step with its reason.

    Before, the exception killed the schedule task unseen ("Task exception was never retrieved"), the step ran its
    whole duration sending nothing, and its report looked like a measurement.
    """
    async with serve(FakeServer()) as fake:
        driver = OpenLoop(fake.endpoint, _workload(fake), timeout_s=30.0, max_connections=4)
        submit = driver._submit
        calls = 0

        def failing_submit(scheduled: float) -> None:
            nonlocal calls
            calls += 1
            if calls == 5:
                raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
            submit(scheduled)

        monkeypatch.setattr(driver, "_submit", failing_submit)
        driver.start(200.0, poisson=False, seed=0)
        driver.measure(600.0, max_requests=10**6)  # a duration no test waits out: the failure must end the step
        async with asyncio.timeout(30):
            result = await driver.finish()
    assert result.failures == [
        "OpenLoop._schedule died: RuntimeError('unable to perform operation on <TCPTransport closed=True>')"
    ]
    assert result.completed == result.sent <= 4
    step = summarise(OpenLoad(200.0, "constant"), result, 1, 4)
    assert step.failure is not None
    assert step.failure.startswith("OpenLoop._schedule died: RuntimeError(")
