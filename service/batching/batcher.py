"""Dynamic batcher: one bounded queue per served model, a collector forming batches by rows, one runner per instance.

Requests from every endpoint join the queue (``queue.py``); as soon as an instance is free the collector takes a
batch and hands it to the dispatcher (``dispatcher.py``), which runs it and answers every caller. A request finding
the batcher idle runs at once in its own task, on the event loop when the model is fast: batching costs nothing
when idle, while requests arriving together still meet in the queue. Knows nothing of HTTP or ONNX.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.batching.dispatcher import Dispatcher
from service.batching.merge import Tensors
from service.batching.policy import BatchObserver, BatchPolicy, RunBatch, Staging
from service.batching.queue import Arrival, Pending, RequestQueue


class Batcher:
    """A dynamic batcher in front of ``policy.instances`` runners.

    Args:
        run_batch: Executes one merged batch on the given instance (in a worker thread, or inline when fast).
        policy: Size, delay, queue and inline bounds.
        observer: Told about every executed batch.
        name: Used in thread names and messages.
        run_inline: Executes the batches run on the event loop instead, when the runner has a cheaper way for
            them (``ModelRunner.run_inline``); ``run_batch`` by default.
        staging: Buffers the runner reads threaded batches from, to merge requests straight into
            (``ModelRunner.staging``).
        run_lone: Executes a lone request (one, with nothing queued or announced behind it) on every core
            (``ModelRunner.run_lone``), when ``may_spread()`` allows it: the server is otherwise quiet
            (``WorkerActivity.alone``). Under load neither holds, so a lone request's cores are not taken
            from the requests being decoded meanwhile.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        policy: BatchPolicy,
        observer: BatchObserver,
        name: str,
        run_inline: RunBatch | None = None,
        staging: Staging | None = None,
        run_lone: RunBatch | None = None,
        may_spread: Callable[[], bool] | None = None,
    ) -> None:
        if policy.max_batch_size < 1 or policy.instances < 1 or policy.max_queue_size < 1:
            raise ValueError(f"batch policy for '{name}' needs sizes >= 1, got {policy}")
        self.policy = policy
        self.name = name
        self._dispatcher = Dispatcher(run_batch, policy, observer, name, run_inline, staging, run_lone, may_spread)
        self._queue = RequestQueue(policy, name, self._dispatcher.retry_after_s)
        self._collector: asyncio.Task[None] | None = None
        self._hot = False  # a request took the idle fast path during this event-loop iteration

    @property
    def queued(self) -> int:
        """Requests waiting in the queue (the queue-depth gauge)."""
        return self._queue.live

    def start(self) -> None:
        """Start the collector task on the running loop."""
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    def announce(self) -> Arrival:
        """Announce a request that will be submitted soon (see ``Arrival``)."""
        return self._queue.announce()

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
            deadline: ``time.monotonic()`` after which the request must not start; it is then answered with
                ``DeadlineExpired`` and dropped (see ``queue.DEADLINE_RESOLUTION_S``).
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
        self._queue.admit(rows, deadline)
        item = Pending(inputs, rows, deadline, is_gone, loop.create_future(), now)
        if not self._hot and self._queue.idle and self._dispatcher.has_free and self._dispatcher.runs_inline(rows):
            # Idle and fast: run now, in this task, no collector. ``_hot`` lets only the first request of a loop
            # iteration do this: a burst's other requests (already scheduled in this iteration) queue and batch.
            self._hot = True
            loop.call_soon(self._cool)
            self._dispatcher.dispatch([item], lone=True)  # inline (answered when it returns) unless spread out
            return await item.future
        self._queue.put(item)
        try:
            return await item.future
        except asyncio.CancelledError:  # the caller is gone (a cancelled gRPC call): out of the queue's count now
            self._queue.drop(item)
            raise

    def _cool(self) -> None:
        self._hot = False

    async def _collect(self) -> None:
        """Form batches until stopped and drained: wait for work and a free instance, take a batch, dispatch it.

        Work is taken only once an instance is free, so requests arriving while every instance is busy join
        the next batch instead of trailing a batch formed too early.
        """
        while await self._queue.wait_for_work():
            if not self._dispatcher.has_free:
                await self._dispatcher.wait_free()
                continue  # re-check: queued requests may have expired meanwhile
            items = await self._queue.next_batch()
            if items:
                self._dispatcher.dispatch(items, lone=len(items) == 1 and self._queue.idle)

    async def stop(self) -> None:
        """Stop taking requests, run everything already queued, wait for running batches, release the threads."""
        self._queue.stop()
        if self._collector is not None:
            await self._collector
        await self._dispatcher.stop()
