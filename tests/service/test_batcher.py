"""The dynamic batcher with a fake ``run_batch``: size and time bounds, split-back, fan-out, queue, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.batching import dispatcher as dispatcher_module
from service.batching import queue as queue_module
from service.batching.batcher import Batcher
from service.batching.errors import BatcherStopped, BatchTooLarge, ClientGone, DeadlineExpired, QueueFull
from service.batching.merge import Tensors
from service.batching.policy import BatchPolicy, BatchTiming
from service.batching.queue import DEADLINE_RESOLUTION_S

WAIT_S = 5.0  # upper bound on any single wait in these tests


class FakeModel:
    """``run_batch`` double: multiplies by 10, records every batch, can be held at a gate or made to fail."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[float]]] = []  # (instance, first value of every row)
        self.threads: list[str] = []  # the thread each batch ran on
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Semaphore(0)  # released each time a batch starts
        self.poison = -1.0  # a row starting with this value makes its batch fail

    def __call__(self, instance: int, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.batches.append((instance, [float(v) for v in x[:, 0]]))
        self.threads.append(threading.current_thread().name)
        self.running.release()
        assert self.gate.wait(WAIT_S), "test never opened the gate"
        if (x[:, 0] == self.poison).any():
            raise RuntimeError("poisoned batch")
        return {"y": x * 10}

    def rows_run(self) -> list[float]:
        return [v for _, values in self.batches for v in values]

    async def wait_running(self) -> None:
        """Wait until a batch has entered the model."""
        deadline = time.monotonic() + WAIT_S
        while not self.running.acquire(blocking=False):
            assert time.monotonic() < deadline, "no batch started"
            await asyncio.sleep(0.001)


class Recorder:
    """``BatchObserver`` double."""

    def __init__(self) -> None:
        self.timings: list[BatchTiming] = []

    def on_batch(self, timing: BatchTiming) -> None:
        self.timings.append(timing)


def always() -> bool:
    return True


def never() -> bool:
    return False


def request(value: float, rows: int = 1) -> dict[str, Any]:
    return {"x": np.full((rows, 2), value, dtype=np.float32)}


async def make(model: FakeModel, **policy: Any) -> tuple[Batcher, Recorder]:
    recorder = Recorder()
    batcher = Batcher(model, BatchPolicy(**{"max_batch_size": 4, **policy}), recorder, name="fake")
    batcher.start()
    return batcher, recorder


async def submit(batcher: Batcher, value: float, rows: int = 1, **kwargs: Any) -> Tensors:
    return await asyncio.wait_for(batcher.infer(request(value, rows), rows, **kwargs), WAIT_S)


async def test_single_request_passes_through_unbatched() -> None:
    model = FakeModel()
    batcher, recorder = await make(model)
    out = await submit(batcher, 3.0)
    np.testing.assert_array_equal(out["y"], np.full((1, 2), 30.0))
    assert model.batches == [(0, [3.0])]
    assert recorder.timings[0].rows == 1
    assert len(recorder.timings[0].queue_waits_s) == 1
    await batcher.stop()


async def test_queued_requests_merge_by_rows_and_each_gets_its_own_rows() -> None:
    model = FakeModel()
    batcher, recorder = await make(model, max_batch_size=8)
    model.gate.clear()
    first = asyncio.ensure_future(submit(batcher, 100.0))
    await model.wait_running()  # the first batch holds the only instance, so the rest queue up
    sizes = [1, 2, 1, 2, 1, 2]  # 9 rows: 1+2+1+2+1 = 7 fit a batch of 8, the last 2 rows wait for the next
    others = [asyncio.ensure_future(submit(batcher, float(i), rows=n)) for i, n in enumerate(sizes)]
    await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(first, *others)
    for i, (n, out) in enumerate(zip(sizes, results[1:], strict=True)):
        np.testing.assert_array_equal(out["y"], np.full((n, 2), 10.0 * i))
    assert [len(values) for _, values in model.batches] == [1, 7, 2]
    assert [t.rows for t in recorder.timings] == [1, 7, 2]
    assert [len(t.queue_waits_s) for t in recorder.timings] == [1, 5, 1]
    await batcher.stop()


async def test_batches_never_exceed_max_batch_size() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=4)
    model.gate.clear()
    first = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    rest = [asyncio.ensure_future(submit(batcher, float(i), rows=3)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(first, *rest)
    assert max(len(values) for _, values in model.batches) <= 4
    assert sorted(model.rows_run()) == sorted([0.0] + [float(i) for i in range(1, 6) for _ in range(3)])
    await batcher.stop()


async def test_request_larger_than_max_batch_size_is_refused_with_both_numbers() -> None:
    batcher, _ = await make(FakeModel(), max_batch_size=4)
    with pytest.raises(BatchTooLarge, match=r"carries 5 rows .* at most 4"):
        await submit(batcher, 1.0, rows=5)
    await batcher.stop()


async def test_an_exception_reaches_every_caller_of_its_batch_and_nobody_else() -> None:
    model = FakeModel()
    model.poison = 7.0
    batcher, _ = await make(model, max_batch_size=4)
    model.gate.clear()
    healthy_first = asyncio.ensure_future(submit(batcher, 1.0))
    await model.wait_running()
    doomed = [asyncio.ensure_future(submit(batcher, v)) for v in (2.0, 7.0, 3.0)]  # one batch, one poisoned row
    await asyncio.sleep(0.01)
    model.gate.set()
    assert (await healthy_first)["y"][0, 0] == 10.0
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and "poisoned" in str(o) for o in outcomes)
    assert (await submit(batcher, 4.0))["y"][0, 0] == 40.0  # the batcher keeps serving
    await batcher.stop()


async def test_full_queue_refuses_with_retry_after() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=1, max_queue_size=2)
    model.gate.clear()
    running = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    queued = [asyncio.ensure_future(submit(batcher, float(i))) for i in (1, 2)]
    await asyncio.sleep(0.01)
    assert batcher.queued == 2
    with pytest.raises(QueueFull, match="queue holds 2 requests, the limit is 2") as caught:
        await submit(batcher, 3.0)
    assert caught.value.retry_after_s >= 1
    model.gate.set()
    await asyncio.gather(running, *queued)
    assert 3.0 not in model.rows_run()
    await batcher.stop()


async def test_deadline_passing_in_the_queue_answers_at_the_deadline_and_never_runs() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=1)
    model.gate.clear()
    running = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    started = time.monotonic()
    with pytest.raises(DeadlineExpired, match="while queued"):
        await submit(batcher, 5.0, deadline=started + 0.05)
    waited = time.monotonic() - started
    assert 0.04 <= waited < 1.0, f"answered after {waited:.3f} s, deadline was 0.05 s"
    assert batcher.queued == 0
    model.gate.set()
    await running
    await submit(batcher, 6.0)  # the collector skipped the expired request and moved on
    assert model.rows_run() == [0.0, 6.0]
    await batcher.stop()


async def test_deadline_already_passed_is_refused_before_queueing() -> None:
    batcher, _ = await make(FakeModel())
    with pytest.raises(DeadlineExpired, match="already passed"):
        await submit(batcher, 1.0, deadline=time.monotonic() - 0.001)
    await batcher.stop()


class FakeClock:
    """The queue's deadline clock, moved by the test: a deadline passes exactly when the test says so."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(queue_module, "monotonic", fake)
    return fake


async def until(condition: Callable[[], bool]) -> None:
    """Wait, bounded by ``WAIT_S``, until ``condition`` holds."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.001)


async def test_a_deadline_below_the_resolution_is_refused_at_admission_whether_idle_or_busy() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=1)
    half = DEADLINE_RESOLUTION_S / 2  # however fast the machine, less than the resolution is left at admission
    with pytest.raises(DeadlineExpired, match="below the deadline resolution of 1 ms"):
        await submit(batcher, 1.0, deadline=time.monotonic() + half)
    model.gate.clear()
    running = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    with pytest.raises(DeadlineExpired, match="below the deadline resolution"):
        await submit(batcher, 2.0, deadline=time.monotonic() + half)
    assert batcher.queued == 0
    model.gate.set()
    await running
    assert model.rows_run() == [0.0]
    await batcher.stop()


async def test_a_deadline_passed_when_its_batch_would_start_expires_though_its_timer_has_not_run(
    clock: FakeClock,
) -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=1)
    model.gate.clear()
    running = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    late = asyncio.ensure_future(submit(batcher, 5.0, deadline=clock.now + 60.0))  # its timer: a minute away
    kept = asyncio.ensure_future(submit(batcher, 6.0))
    await until(lambda: batcher.queued == 2)
    clock.now += 61.0  # the deadline passes while the model is busy; no timer has fired
    model.gate.set()
    with pytest.raises(DeadlineExpired, match="while queued"):
        await late
    await asyncio.gather(running, kept)
    assert model.rows_run() == [0.0, 6.0]
    await batcher.stop()


async def test_a_deadline_timer_firing_before_the_deadline_is_re_armed_not_expired(clock: FakeClock) -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=1)
    model.gate.clear()
    running = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    waiting = asyncio.ensure_future(submit(batcher, 5.0, deadline=clock.now + 0.01))
    await until(lambda: batcher.queued == 1)
    await asyncio.sleep(0.05)  # real timers fire meanwhile, but by the deadline's clock it has not passed
    assert not waiting.done()
    assert batcher.queued == 1
    clock.now += 0.02
    with pytest.raises(DeadlineExpired, match="while queued"):
        await waiting
    model.gate.set()
    await running
    assert model.rows_run() == [0.0]
    await batcher.stop()


async def test_requests_of_gone_clients_are_dropped_before_running() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=4)
    model.gate.clear()
    running = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    gone = asyncio.ensure_future(submit(batcher, 9.0, is_gone=lambda: True))
    kept = asyncio.ensure_future(submit(batcher, 8.0, is_gone=lambda: False))
    await asyncio.sleep(0.01)
    model.gate.set()
    with pytest.raises(ClientGone):
        await gone
    await asyncio.gather(running, kept)
    assert 9.0 not in model.rows_run()
    assert 8.0 in model.rows_run()
    await batcher.stop()


async def test_cancelled_callers_leave_the_queue_and_never_run() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=4)
    model.gate.clear()
    running = asyncio.ensure_future(submit(batcher, 0.0))
    await model.wait_running()
    victim = asyncio.ensure_future(batcher.infer(request(9.0), 1))
    await asyncio.sleep(0.01)
    assert batcher.queued == 1
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert batcher.queued == 0  # at once, while the model is still held: not when the next batch forms
    model.gate.set()
    await running
    await submit(batcher, 1.0)
    assert model.rows_run() == [0.0, 1.0]
    assert batcher.queued == 0
    await batcher.stop()


async def test_lone_request_runs_at_once_despite_a_long_queue_delay() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_queue_delay_s=2.0)
    started = time.perf_counter()
    await submit(batcher, 1.0)
    assert time.perf_counter() - started < 0.5  # would be >= 2 s if a lone request waited for company
    await batcher.stop()


async def test_announced_arrivals_are_waited_for_up_to_the_queue_delay() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=4, max_queue_delay_s=0.2)
    with batcher.announce() as arrival:
        early = asyncio.ensure_future(submit(batcher, 1.0))
        await asyncio.sleep(0.02)  # the first request waits: an announced arrival is on its way
        assert model.batches == []
        late = asyncio.ensure_future(submit(batcher, 2.0, arrival=arrival))
        await asyncio.gather(early, late)
    assert model.batches == [(0, [1.0, 2.0])]
    # An arrival that never comes holds the batch for at most the queue delay.
    stalled = batcher.announce()
    started = time.perf_counter()
    await submit(batcher, 3.0)
    waited = time.perf_counter() - started
    stalled.close()
    assert 0.15 <= waited < 1.0, f"waited {waited:.3f} s for a 0.2 s queue delay"
    await batcher.stop()


async def test_a_deadline_passing_while_its_batch_forms_drops_it_and_the_batch_runs_without_it() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=4, max_queue_delay_s=WAIT_S)
    with batcher.announce() as arrival:
        kept = asyncio.ensure_future(submit(batcher, 1.0))
        with pytest.raises(DeadlineExpired, match="while queued"):
            await submit(batcher, 2.0, deadline=time.monotonic() + 0.05)  # taken into the forming batch, then due
        assert model.batches == []  # the batch still waits for the announced arrival
        late = asyncio.ensure_future(submit(batcher, 3.0, arrival=arrival))
        await asyncio.gather(kept, late)
    assert model.batches == [(0, [1.0, 3.0])]
    assert batcher.queued == 0
    await batcher.stop()


async def test_instances_run_batches_concurrently() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=1, instances=2)
    model.gate.clear()
    both = [asyncio.ensure_future(submit(batcher, float(i))) for i in range(2)]
    await model.wait_running()
    await model.wait_running()  # two batches in the model at the same time
    model.gate.set()
    await asyncio.gather(*both)
    assert sorted(instance for instance, _ in model.batches) == [0, 1]
    await batcher.stop()


async def test_stop_runs_queued_work_then_refuses_new_requests() -> None:
    model = FakeModel()
    batcher, _ = await make(model, max_batch_size=1)
    model.gate.clear()
    pending = [asyncio.ensure_future(submit(batcher, float(i))) for i in range(3)]
    await model.wait_running()
    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.sleep(0.01)
    with pytest.raises(BatcherStopped, match="shutting down"):
        await submit(batcher, 9.0)
    model.gate.set()
    await asyncio.wait_for(stopping, WAIT_S)
    assert [o["y"][0, 0] for o in await asyncio.gather(*pending)] == [0.0, 10.0, 20.0]


async def test_a_model_returning_the_wrong_row_count_fails_its_callers() -> None:
    batcher = Batcher(
        lambda instance, inputs: {"y": np.zeros((1, 2))}, BatchPolicy(max_batch_size=4), Recorder(), name="bad"
    )
    batcher.start()
    with pytest.raises(ValueError, match="expected 3 rows on axis 0"):
        await submit(batcher, 1.0, rows=3)
    await batcher.stop()


async def test_fast_models_run_on_the_event_loop_when_idle_and_slow_ones_in_threads() -> None:
    model = FakeModel()
    batcher, recorder = await make(model, inline_max_s=1.0)
    await submit(batcher, 1.0)  # no cost known yet: runs in the worker thread and measures
    await submit(batcher, 2.0)  # predicted far below 1 s: runs inline, skipping queue and threads
    assert model.threads[0].startswith("run-fake")
    assert model.threads[1] == threading.current_thread().name
    assert [t.rows for t in recorder.timings] == [1, 1]
    await batcher.stop()

    slow = FakeModel()
    batcher, _ = await make(slow, inline_max_s=1e-9)  # nothing is that fast
    await submit(batcher, 1.0)
    await submit(batcher, 2.0)
    assert all(name.startswith("run-fake") for name in slow.threads)
    await batcher.stop()


async def test_an_inline_failure_reaches_only_its_caller() -> None:
    model = FakeModel()
    model.poison = 7.0
    batcher, _ = await make(model, inline_max_s=1.0)
    await submit(batcher, 1.0)
    with pytest.raises(RuntimeError, match="poisoned"):
        await submit(batcher, 7.0)
    assert (await submit(batcher, 3.0))["y"][0, 0] == 30.0
    assert model.threads[1] == model.threads[2] == threading.current_thread().name
    await batcher.stop()


async def test_a_burst_on_an_idle_fast_model_runs_its_first_request_at_once_and_batches_the_rest() -> None:
    model = FakeModel()
    batcher, recorder = await make(model, max_batch_size=8, inline_max_s=1.0)
    await submit(batcher, 0.0)  # learn the cost
    burst = await asyncio.gather(*(submit(batcher, float(i)) for i in range(1, 7)))
    assert [o["y"][0, 0] for o in burst] == [10.0 * i for i in range(1, 7)]
    assert [t.rows for t in recorder.timings] == [1, 1, 5]  # learner, the burst's first alone, the rest together
    assert model.threads[1:] == [threading.current_thread().name] * 2
    await batcher.stop()


async def test_inline_batches_use_run_inline_and_threaded_ones_run_batch() -> None:
    threaded, inline = FakeModel(), FakeModel()
    batcher = Batcher(threaded, BatchPolicy(max_batch_size=4, inline_max_s=1.0), Recorder(), "fake", run_inline=inline)
    batcher.start()
    await submit(batcher, 1.0)  # no cost known yet: worker thread, run_batch
    assert (await submit(batcher, 2.0))["y"][0, 0] == 20.0  # predicted fast: event loop, run_inline
    assert threaded.rows_run() == [1.0]
    assert inline.rows_run() == [2.0]
    assert inline.threads == [threading.current_thread().name]
    await batcher.stop()


async def test_a_threaded_batch_with_nothing_behind_it_runs_lone_and_one_with_company_does_not() -> None:
    company, lone = FakeModel(), FakeModel()
    batcher = Batcher(company, BatchPolicy(max_batch_size=2), Recorder(), "fake", run_lone=lone, may_spread=always)
    batcher.start()
    await submit(batcher, 1.0)  # nothing queued, nothing announced: lone
    with batcher.announce():  # a request on its way (its body being decoded): company
        await submit(batcher, 2.0)
    lone.gate.clear()  # hold the next lone batch in its thread while three more queue behind it
    first = asyncio.ensure_future(submit(batcher, 3.0))
    await lone.wait_running()
    await lone.wait_running()  # the batch of 1.0 released once already; this is 3.0's
    others = asyncio.gather(*(submit(batcher, v) for v in (4.0, 5.0, 6.0)))
    while batcher.queued < 3:  # each queues in its task's first step
        await asyncio.sleep(0)
    lone.gate.set()
    await first
    await others
    assert lone.rows_run() == [1.0, 3.0, 6.0]  # 6.0 came last, alone
    assert company.rows_run() == [2.0, 4.0, 5.0]  # 4.0 and 5.0 left 6.0 queued behind them
    await batcher.stop()


async def test_two_requests_taken_together_are_company_even_with_nothing_behind_them() -> None:
    company, lone = FakeModel(), FakeModel()
    batcher = Batcher(company, BatchPolicy(max_batch_size=4), Recorder(), "fake", run_lone=lone, may_spread=always)
    batcher.start()
    lone.gate.clear()  # hold the first request's lone batch while two more queue behind it
    first = asyncio.ensure_future(submit(batcher, 1.0))
    await lone.wait_running()
    pair = asyncio.gather(submit(batcher, 2.0), submit(batcher, 3.0))
    while batcher.queued < 2:
        await asyncio.sleep(0)
    lone.gate.set()
    await first
    await pair
    assert lone.rows_run() == [1.0]
    assert company.rows_run() == [2.0, 3.0]  # one batch, nothing behind it, but two requests: not lone
    await batcher.stop()


async def test_a_lone_request_worth_every_core_leaves_the_event_loop_for_run_lone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    company, inline, lone = FakeModel(), FakeModel(), FakeModel()
    asked: list[bool] = []

    def siblings_idle() -> bool:
        asked.append(True)
        return True

    policy = BatchPolicy(max_batch_size=8, inline_max_s=1.0)  # every batch here is predicted fast enough to inline
    batcher = Batcher(company, policy, Recorder(), "fake", run_inline=inline, run_lone=lone, may_spread=siblings_idle)
    batcher.start()
    await submit(batcher, 1.0)  # no cost known yet: a worker thread, and lone
    assert len(asked) == 1
    monkeypatch.setattr(dispatcher_module, "LONE_SPREAD_MIN_S", 10.0)  # no lone request is worth the hop
    await submit(batcher, 2.0, rows=4)
    assert len(asked) == 1  # not even asked: the other workers are none of a fast request's business
    monkeypatch.setattr(dispatcher_module, "LONE_SPREAD_MIN_S", 0.0)  # every lone request is
    await submit(batcher, 3.0, rows=4)
    assert len(asked) == 2
    assert inline.rows_run() == [2.0] * 4
    assert inline.threads == [threading.current_thread().name]
    assert lone.rows_run() == [1.0] + [3.0] * 4
    assert threading.current_thread().name not in lone.threads
    assert company.rows_run() == []
    await batcher.stop()


async def test_a_lone_request_stays_on_its_share_while_another_worker_is_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    company, inline, lone = FakeModel(), FakeModel(), FakeModel()
    policy = BatchPolicy(max_batch_size=8, inline_max_s=1.0)
    batcher = Batcher(company, policy, Recorder(), "fake", run_inline=inline, run_lone=lone, may_spread=never)
    batcher.start()
    await submit(batcher, 1.0)  # no cost known yet: a worker thread, on this worker's share of the cores
    monkeypatch.setattr(dispatcher_module, "LONE_SPREAD_MIN_S", 0.0)
    await submit(batcher, 2.0, rows=4)  # worth every core, but they are in use: the event loop, as without a sibling
    assert company.rows_run() == [1.0]
    assert inline.rows_run() == [2.0] * 4
    assert lone.rows_run() == []
    await batcher.stop()
