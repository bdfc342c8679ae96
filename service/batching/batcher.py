"""Dynamic batcher: one bounded queue per served model, a collector forming batches by rows, one runner per instance.

Requests from every endpoint join the queue; as soon as an instance is free the collector takes as many rows as
fit ``max_batch_size`` and waits up to ``max_queue_delay`` for more only while announced arrivals are on their
way, so a lone request never waits. Batches of a fast model run on the event loop itself, skipping the two thread
hops that would cost more than the model, and a request finding the batcher idle runs at once in its own task:
batching costs nothing when idle. Requests arriving together still meet in the queue. An exception in a batch
reaches every caller of that batch and nothing else. Knows nothing of HTTP or ONNX.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from service.batching.errors import BatcherStopped, BatchTooLarge, ClientGone, DeadlineExpired, QueueFull
from service.batching.merge import Tensors, merge_inputs, split_outputs
from service.batching.policy import BatchObserver, BatchPolicy, BatchTiming, RunBatch

logger = logging.getLogger(__name__)


class _Pending:
    """One queued request and the future its caller awaits."""

    __slots__ = ("inputs", "rows", "deadline", "is_gone", "future", "enqueued", "timer", "settled")

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        deadline: float | None,
        is_gone: Callable[[], bool] | None,
        future: asyncio.Future[Tensors],
        enqueued: float,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.is_gone = is_gone
        self.future = future
        self.enqueued = enqueued
        self.timer: asyncio.TimerHandle | None = None
        self.settled = False  # left the queue's live count (taken, expired, or abandoned)


class Arrival:
    """A request announced before it is ready to queue (its body or image is still being read or decoded).

    While arrivals are open, a partial batch may wait (up to the queue delay) for them; with none open it runs
    at once. Use as a context manager; ``Batcher.infer(arrival=...)`` closes it when the request is queued.
    """

    __slots__ = ("_batcher", "_open")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._open = True
        batcher._expected += 1

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop counting this arrival (idempotent)."""
        if self._open:
            self._open = False
            self._batcher._expected -= 1
            self._batcher._wake.set()


class Batcher:
    """A dynamic batcher in front of ``policy.instances`` runners.

    Args:
        run_batch: Executes one merged batch on the given instance (in a worker thread, or inline when fast).
        policy: Size, delay, queue and inline bounds.
        observer: Told about every executed batch.
        name: Used in thread names and messages.
        run_inline: Executes the batches run on the event loop instead, when the runner has a cheaper way for
            them (``ModelRunner.run_inline``); ``run_batch`` by default.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        policy: BatchPolicy,
        observer: BatchObserver,
        name: str,
        run_inline: RunBatch | None = None,
    ) -> None:
        if policy.max_batch_size < 1 or policy.instances < 1 or policy.max_queue_size < 1:
            raise ValueError(f"batch policy for '{name}' needs sizes >= 1, got {policy}")
        self.policy = policy
        self.name = name
        self._run_batch = run_batch
        self._run_inline = run_inline or run_batch
        self._observer = observer
        self._queue: deque[_Pending] = deque()
        self._live = 0  # queued requests whose callers still wait
        self._live_rows = 0
        self._expected = 0  # open Arrivals
        self._wake = asyncio.Event()  # work queued, an arrival closed, or stopping
        self._free: deque[int] = deque(range(policy.instances))
        self._freed = asyncio.Event()
        self._executor = ThreadPoolExecutor(policy.instances, thread_name_prefix=f"run-{name}")
        self._running: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None
        self._stopping = False
        self._batch_ema_s = 0.0  # smoothed batch compute time, for Retry-After
        self._row_cost_s: float | None = None  # smoothed model time per row, to predict a batch's run time
        self._hot = False  # a request took the idle fast path during this event-loop iteration
        self._target_rows = policy.preferred_batch_size or policy.max_batch_size

    @property
    def queued(self) -> int:
        """Requests waiting in the queue (the queue-depth gauge)."""
        return self._live

    def start(self) -> None:
        """Start the collector task on the running loop."""
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    def announce(self) -> Arrival:
        """Announce a request that will be submitted soon (see ``Arrival``)."""
        return Arrival(self)

    async def infer(
        self,
        inputs: Tensors,
        rows: int,
        *,
        deadline: float | None = None,
        is_gone: Callable[[], bool] | None = None,
        arrival: Arrival | None = None,
    ) -> Tensors:
        """Queue one request and wait for its slice of the batch output.

        Args:
            inputs: Named arrays, each with ``rows`` on axis 0.
            rows: Rows this request contributes to a batch.
            deadline: ``loop.time()`` after which the request must not start; it is then answered with
                ``DeadlineExpired`` and dropped.
            is_gone: Returns True once the caller has disconnected; checked before the request runs.
            arrival: The request's announcement, closed once it is queued.

        Raises:
            QueueFull, BatchTooLarge, DeadlineExpired, ClientGone, BatcherStopped: see each class.
            Exception: whatever ``run_batch`` raised for this request's batch.
        """
        if arrival is not None:
            arrival.close()
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._admit(rows, deadline, now)
        if not self._hot and not self._queue and self._free and not self._expected and self._inline(rows):
            # Idle and fast: run now, in this task. ``_hot`` lets only the first request of a loop iteration
            # do this: a burst's other requests (already scheduled in this iteration) queue up and batch.
            self._hot = True
            loop.call_soon(self._cool)
            return self._run_now(inputs, rows)
        item = _Pending(inputs, rows, deadline, is_gone, loop.create_future(), now)
        if deadline is not None:
            item.timer = loop.call_at(deadline, self._expire, item)
        self._queue.append(item)
        self._live += 1
        self._live_rows += rows
        self._wake.set()
        return await item.future

    def _admit(self, rows: int, deadline: float | None, now: float) -> None:
        """Refuse a request that can never run here, before it takes a queue slot."""
        if self._stopping:
            raise BatcherStopped(f"model '{self.name}' is shutting down and accepts no new requests")
        if rows > self.policy.max_batch_size:
            raise BatchTooLarge(
                f"request carries {rows} rows but model '{self.name}' batches at most {self.policy.max_batch_size}; "
                "split it into smaller requests"
            )
        if self._live >= self.policy.max_queue_size:
            raise QueueFull(self._live, self.policy.max_queue_size, self.retry_after_s())
        if deadline is not None and deadline <= now:
            raise DeadlineExpired(f"deadline already passed {1e3 * (now - deadline):.1f} ms before queueing")

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: queued batches times the smoothed batch time, at least 1."""
        batches = math.ceil(self._live_rows / self.policy.max_batch_size) / self.policy.instances
        return max(1, math.ceil(batches * self._batch_ema_s))

    def _inline(self, rows: int) -> bool:
        """Whether a batch of ``rows`` is predicted fast enough to run on the event loop."""
        cost = self._row_cost_s
        return cost is not None and rows * cost <= self.policy.inline_max_s

    def _settle(self, item: _Pending) -> None:
        """Take an item out of the live count exactly once, and stop its deadline timer."""
        if not item.settled:
            item.settled = True
            self._live -= 1
            self._live_rows -= item.rows
            if item.timer is not None:
                item.timer.cancel()

    def _expire(self, item: _Pending) -> None:
        if not item.settled and not item.future.done():
            self._settle(item)
            item.future.set_exception(DeadlineExpired("deadline passed while queued; the request did not run"))

    def _take(self, room: int) -> tuple[list[_Pending], int]:
        """Pop queued requests in order while they fit ``room`` rows, dropping dead and abandoned ones."""
        taken: list[_Pending] = []
        rows = 0
        queue = self._queue
        while queue:
            item = queue[0]
            if item.settled or item.future.done():  # expired, or its caller was cancelled
                queue.popleft()
                self._settle(item)
                continue
            if item.is_gone is not None and item.is_gone():
                queue.popleft()
                self._settle(item)
                item.future.set_exception(ClientGone("client disconnected while queued; request dropped"))
                continue
            if rows + item.rows > room:
                break
            queue.popleft()
            self._settle(item)
            taken.append(item)
            rows += item.rows
        return taken, rows

    async def _collect(self) -> None:
        """Form batches until stopped and drained: wait for work and a free instance, gather a batch, run it.

        Work is taken only once an instance is free, so requests arriving while every instance is busy join
        the next batch instead of trailing a batch formed too early.
        """
        loop = asyncio.get_running_loop()
        while True:
            while not self._live:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
            if not self._free:
                self._freed.clear()
                await self._freed.wait()
                continue  # re-check: queued requests may have expired meanwhile
            items, rows = await self._form_batch(loop)
            now = loop.time()
            expired = [i for i in items if i.deadline is not None and i.deadline <= now]
            for item in expired:
                item.future.set_exception(DeadlineExpired("deadline passed while queued; the request did not run"))
            if expired:
                items = [i for i in items if i not in expired]
                rows = sum(i.rows for i in items)
            if items:
                self._dispatch(loop, items, rows)

    async def _form_batch(self, loop: asyncio.AbstractEventLoop) -> tuple[list[_Pending], int]:
        limit = self.policy.max_batch_size
        items, rows = self._take(limit)
        if not items or rows >= self._target_rows or not self._expected or self.policy.max_queue_delay_s <= 0:
            return items, rows
        until = items[0].enqueued + self.policy.max_queue_delay_s
        timer = loop.call_at(until, self._wake.set)
        while rows < self._target_rows and self._expected and loop.time() < until:
            self._wake.clear()
            await self._wake.wait()
            more, n = self._take(limit - rows)
            items += more
            rows += n
            if self._queue and not more and not self._queue[0].settled:
                break  # the next request does not fit: this batch is as full as it gets
        timer.cancel()
        return items, rows

    def _dispatch(self, loop: asyncio.AbstractEventLoop, items: list[_Pending], rows: int) -> None:
        """Run a batch on a free instance: inline when predicted fast, else in the instance's worker thread."""
        instance = self._free.popleft()
        now = loop.time()
        waits = tuple(now - item.enqueued for item in items)
        if self._inline(rows):
            try:
                inputs = [item.inputs for item in items]
                results = self._run(instance, inputs, [item.rows for item in items], self._run_inline)
            except Exception as err:
                self._fail(items, rows, err)
            else:
                self._deliver(items, rows, waits, results)
            finally:
                self._release(instance)
            return
        task = loop.create_task(self._run_threaded(loop, instance, items, rows, waits))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_threaded(
        self, loop: asyncio.AbstractEventLoop, instance: int, items: list[_Pending], rows: int, waits: tuple[float, ...]
    ) -> None:
        try:
            results = await loop.run_in_executor(
                self._executor,
                self._run,
                instance,
                [item.inputs for item in items],
                [item.rows for item in items],
                self._run_batch,
            )
        except Exception as err:
            self._fail(items, rows, err)
        else:
            self._deliver(items, rows, waits, results)
        finally:
            self._release(instance)

    def _cool(self) -> None:
        self._hot = False

    def _run_now(self, inputs: Tensors, rows: int) -> Tensors:
        """The idle fast path: run one request on the event loop, no queue, no collector, no thread hop."""
        instance = self._free.popleft()
        try:
            results = self._run(instance, [inputs], [rows], self._run_inline)
        except Exception:
            logger.exception("model '%s': request of %d rows failed", self.name, rows)
            raise
        finally:
            self._release(instance)
        self._record(rows, (0.0,), results)
        return results[0][0]

    def _run(
        self, instance: int, inputs: list[Tensors], rows: list[int], run_batch: RunBatch
    ) -> tuple[list[Tensors], float, float, float]:
        """Merge, run (with ``run_batch``), split; returns each request's outputs and the three phase times."""
        t0 = time.perf_counter()
        merged = merge_inputs(inputs)
        t1 = time.perf_counter()
        outputs = run_batch(instance, merged)
        t2 = time.perf_counter()
        pieces: list[Tensors] = list(split_outputs(outputs, rows))
        return pieces, t1 - t0, t2 - t1, time.perf_counter() - t2

    def _deliver(
        self,
        items: list[_Pending],
        rows: int,
        waits: tuple[float, ...],
        results: tuple[list[Tensors], float, float, float],
    ) -> None:
        for item, result in zip(items, results[0], strict=True):
            if not item.future.done():
                item.future.set_result(result)
        self._record(rows, waits, results)

    def _record(self, rows: int, waits: tuple[float, ...], results: tuple[list[Tensors], float, float, float]) -> None:
        _, merge_s, run_s, split_s = results
        cost, took = run_s / rows, merge_s + run_s + split_s
        self._row_cost_s = cost if self._row_cost_s is None else 0.8 * self._row_cost_s + 0.2 * cost
        self._batch_ema_s = took if not self._batch_ema_s else 0.8 * self._batch_ema_s + 0.2 * took
        self._observer.on_batch(BatchTiming(rows, waits, merge_s, run_s, split_s))

    def _fail(self, items: list[_Pending], rows: int, err: Exception) -> None:
        """Every caller of the failed batch gets the exception; nobody else."""
        logger.error("model '%s': batch of %d rows (%d requests) failed", self.name, rows, len(items), exc_info=err)
        for item in items:
            if not item.future.done():
                item.future.set_exception(err)

    def _release(self, instance: int) -> None:
        self._free.append(instance)
        self._freed.set()

    async def stop(self) -> None:
        """Stop taking requests, run everything already queued, wait for running batches, release the threads."""
        self._stopping = True
        self._wake.set()
        if self._collector is not None:
            await self._collector
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)
