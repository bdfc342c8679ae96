"""Dynamic batcher: one bounded queue per served model, a collector forming batches by rows, one runner per instance.

Requests from every endpoint join the queue; the collector takes as many rows as fit ``max_batch_size`` as soon as
an instance is free, and waits up to ``max_queue_delay`` for more only while announced arrivals are on their way,
so a lone request never waits. Knows nothing of HTTP or ONNX: it batches mappings of numpy arrays and calls
``run_batch`` in a worker thread. An exception in a batch reaches every caller of that batch and nothing else.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from service.merge import Tensors, merge_inputs, split_outputs

#: ``run_batch(instance_index, merged_inputs) -> outputs``; runs in the batcher's worker thread for that instance.
RunBatch = Callable[[int, Tensors], Tensors]


class BatcherError(Exception):
    """Base of the batcher's refusals; the data plane maps each to an HTTP status."""


class QueueFull(BatcherError):
    """The queue holds ``max_queue_size`` requests; ``retry_after_s`` estimates when it will have room."""

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(f"queue holds {queued} requests, the limit is {limit}; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class BatchTooLarge(BatcherError):
    """A single request carries more rows than one batch may hold."""


class DeadlineExpired(BatcherError):
    """The request's deadline passed while it was queued; it never ran."""


class ClientGone(BatcherError):
    """The caller disconnected while queued; its work was dropped before running."""


class BatcherStopped(BatcherError):
    """The batcher is draining for shutdown or unload and takes no new work."""


@dataclass(frozen=True)
class BatchPolicy:
    """How batches form; Triton's ``dynamic_batching`` vocabulary, with units in the names."""

    max_batch_size: int
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 256
    preferred_batch_size: int = 0  # 0: fill up to max_batch_size
    instances: int = 1


@dataclass(frozen=True)
class BatchTiming:
    """What one batch cost, handed to the observer: rows, per-request queue waits, and the three compute phases."""

    rows: int
    queue_waits_s: tuple[float, ...]
    merge_s: float
    run_s: float
    split_s: float


class BatchObserver(Protocol):
    """Receives one ``BatchTiming`` per executed batch (metrics and statistics implement this)."""

    def on_batch(self, timing: BatchTiming) -> None:
        """Record one executed batch; called on the event loop, so it must be quick."""


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
        run_batch: Executes one merged batch on the given instance; called in a worker thread.
        policy: Size, delay and queue bounds.
        observer: Told about every executed batch.
        name: Used in thread names and messages.
    """

    def __init__(self, run_batch: RunBatch, policy: BatchPolicy, observer: BatchObserver, name: str) -> None:
        if policy.max_batch_size < 1 or policy.instances < 1 or policy.max_queue_size < 1:
            raise ValueError(f"batch policy for '{name}' needs sizes >= 1, got {policy}")
        self.policy = policy
        self.name = name
        self._run_batch = run_batch
        self._observer = observer
        self._queue: deque[_Pending] = deque()
        self._live = 0  # queued requests whose callers still wait
        self._live_rows = 0
        self._expected = 0  # open Arrivals
        self._wake = asyncio.Event()
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for instance in range(policy.instances):
            self._free.put_nowait(instance)
        self._executor = ThreadPoolExecutor(policy.instances, thread_name_prefix=f"run-{name}")
        self._running: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None
        self._stopping = False
        self._batch_ema_s = 0.0  # smoothed batch run time, for Retry-After
        self._target_rows = policy.preferred_batch_size or policy.max_batch_size

    @property
    def queued(self) -> int:
        """Requests waiting in the queue (the queue-depth gauge)."""
        return self._live

    @property
    def executing(self) -> int:
        """Batches running now."""
        return len(self._running)

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
        try:
            future = self._enqueue(inputs, rows, deadline, is_gone)
        finally:
            if arrival is not None:
                arrival.close()
        return await future

    def _enqueue(
        self, inputs: Tensors, rows: int, deadline: float | None, is_gone: Callable[[], bool] | None
    ) -> asyncio.Future[Tensors]:
        if self._stopping:
            raise BatcherStopped(f"model '{self.name}' is shutting down and accepts no new requests")
        if rows > self.policy.max_batch_size:
            raise BatchTooLarge(
                f"request carries {rows} rows but model '{self.name}' batches at most {self.policy.max_batch_size}; "
                "split it into smaller requests"
            )
        if self._live >= self.policy.max_queue_size:
            raise QueueFull(self._live, self.policy.max_queue_size, self.retry_after_s())
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline is not None and deadline <= now:
            raise DeadlineExpired(f"deadline already passed {1e3 * (now - deadline):.1f} ms before queueing")
        item = _Pending(inputs, rows, deadline, is_gone, loop.create_future(), now)
        if deadline is not None:
            item.timer = loop.call_at(deadline, self._expire, item)
        self._queue.append(item)
        self._live += 1
        self._live_rows += rows
        self._wake.set()
        return item.future

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: queued batches times the smoothed batch time, at least 1."""
        batches = math.ceil(self._live_rows / self.policy.max_batch_size) / self.policy.instances
        return max(1, math.ceil(batches * self._batch_ema_s))

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
        """Form batches forever: wait for a free instance, then for work, then hand the batch to a runner."""
        loop = asyncio.get_running_loop()
        while True:
            instance = await self._free.get()
            batch = await self._form_batch(loop)
            if batch is None:
                return
            task = loop.create_task(self._execute(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _form_batch(self, loop: asyncio.AbstractEventLoop) -> tuple[list[_Pending], int] | None:
        limit = self.policy.max_batch_size
        while True:
            items, rows = self._take(limit)
            if items:
                break
            if self._stopping and not self._queue:
                return None
            self._wake.clear()
            await self._wake.wait()
        if rows < self._target_rows and self._expected > 0 and self.policy.max_queue_delay_s > 0:
            until = items[0].enqueued + self.policy.max_queue_delay_s
            timer = loop.call_at(until, self._wake.set)
            while rows < self._target_rows and self._expected > 0 and loop.time() < until:
                self._wake.clear()
                await self._wake.wait()
                more, n = self._take(limit - rows)
                items += more
                rows += n
                if self._queue and not more and not self._queue[0].settled:
                    break  # the next request does not fit: this batch is as full as it gets
            timer.cancel()
        return items, rows

    async def _execute(self, instance: int, batch: tuple[list[_Pending], int]) -> None:
        items, rows = batch
        started = time.perf_counter()
        now = asyncio.get_running_loop().time()
        waits = tuple(now - item.enqueued for item in items)
        try:
            results, merge_s, run_s, split_s = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, instance, items
            )
        except Exception as err:  # every caller of this batch gets the failure, nobody else
            for item in items:
                if not item.future.done():
                    item.future.set_exception(err)
        else:
            for item, result in zip(items, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
            self._observer.on_batch(BatchTiming(rows, waits, merge_s, run_s, split_s))
        finally:
            elapsed = time.perf_counter() - started
            self._batch_ema_s = elapsed if self._batch_ema_s == 0 else 0.8 * self._batch_ema_s + 0.2 * elapsed
            self._free.put_nowait(instance)

    def _run(self, instance: int, items: list[_Pending]) -> tuple[list[Tensors], float, float, float]:
        """Worker-thread part of a batch: merge, run, split; returns the pieces and the three phase times."""
        t0 = time.perf_counter()
        merged = merge_inputs([item.inputs for item in items])
        t1 = time.perf_counter()
        outputs = self._run_batch(instance, merged)
        t2 = time.perf_counter()
        pieces: list[Tensors] = list(split_outputs(outputs, [item.rows for item in items]))
        return pieces, t1 - t0, t2 - t1, time.perf_counter() - t2

    async def stop(self) -> None:
        """Stop taking requests, run everything already queued, wait for running batches, release the threads."""
        self._stopping = True
        self._wake.set()
        if self._collector is not None:
            await self._collector
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)
