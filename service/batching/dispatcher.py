"""The batcher's dispatcher: runs a taken batch on a free model instance and hands every caller its answer.

A batch predicted to be fast runs on the event loop itself, skipping the two thread hops that would cost more than
a tiny model; anything else runs in the instance's worker thread. Both ways end in ``_complete``: each caller gets
its slice of the outputs, or, when the batch failed, every caller of that batch gets the exception and nobody
else does. The cost model (smoothed time per row and per batch) decides inline runs and ``Retry-After``.

A lone request (one request, nothing queued or announced behind it) runs through ``run_lone``, on every core, when
the runner has that way and ``may_spread()`` says the server is otherwise quiet (``service/worker_activity.py``).
It then leaves the event loop even if it would be fast enough there, once it is predicted to take
``LONE_SPREAD_MIN_S`` on one core: 32 rows of a small CNN took 0.79 ms on the loop's single thread, and a lone
request of that size is worth the hop to two.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.batching.merge import Tensors, merge_inputs, split_outputs
from service.batching.policy import BatchObserver, BatchPolicy, BatchTiming, RunBatch, Staging
from service.batching.queue import Pending

logger = logging.getLogger(__name__)

#: A lone request predicted to take at least this long on one core runs on every core (``run_lone``), not on the
#: event loop: the two thread hops (about 0.05 ms on this project's VM) are then a fraction of what a second core saves.
LONE_SPREAD_MIN_S = 250e-6


@dataclass(frozen=True)
class BatchOutcome:
    """What running one batch produced: each request's outputs in queue order, and the three phase times."""

    outputs: list[Tensors]
    merge_s: float
    run_s: float
    split_s: float


def _execute(
    run_batch: RunBatch, instance: int, items: list[Pending], out: Tensors | None = None
) -> BatchOutcome | Exception:
    """Merge (into ``out``, the runner's staging buffers, when given), run, split: the whole of one batch, on
    whichever thread calls it. Failures are returned, not raised, so the inline and threaded paths complete the same
    way."""
    try:
        t0 = time.perf_counter()
        merged = merge_inputs([item.inputs for item in items], out)
        t1 = time.perf_counter()
        outputs = run_batch(instance, merged)
        t2 = time.perf_counter()
        pieces: list[Tensors] = list(split_outputs(outputs, [item.rows for item in items]))
        return BatchOutcome(pieces, t1 - t0, t2 - t1, time.perf_counter() - t2)
    except Exception as err:
        return err


class Dispatcher:
    """Model instances, the cost model, and the one completion path.

    Args:
        run_batch: Executes one merged batch on the given instance in its worker thread.
        policy: Instance count and the inline bound.
        observer: Told about every executed batch.
        name: Used in thread names and log lines.
        run_inline: Executes the batches run on the event loop, when the runner has a cheaper way for them.
        staging: The runner's staging buffers that threaded batches are merged into, when it has them.
        run_lone: Executes a lone request's batch (``dispatch(lone=True)``) on every core
            (``ModelRunner.run_lone``), when the runner has that way.
        may_spread: Whether a lone request may take every core now (``WorkerActivity.alone``); asked only
            for a lone request that would gain from it.
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
        self._run_batch = run_batch
        self._run_lone = run_lone or run_batch
        self._may_spread = may_spread if run_lone is not None else None
        self._staging = staging
        self._run_inline = run_inline or run_batch
        self._policy = policy
        self._observer = observer
        self._name = name
        self._free: deque[int] = deque(range(policy.instances))
        self._freed = asyncio.Event()
        self._executor = ThreadPoolExecutor(policy.instances, thread_name_prefix=f"run-{name}")
        self._running: set[asyncio.Task[None]] = set()
        self._row_cost_s: float | None = None  # smoothed model time per row, to predict a batch's run time
        self._batch_ema_s = 0.0  # smoothed whole-batch time, for Retry-After

    @property
    def has_free(self) -> bool:
        """Whether an instance could take a batch now."""
        return bool(self._free)

    async def wait_free(self) -> None:
        """Wait until an instance is free."""
        while not self._free:
            self._freed.clear()
            await self._freed.wait()

    def runs_inline(self, rows: int) -> bool:
        """Whether a batch of ``rows`` is predicted fast enough to run on the event loop."""
        cost = self._row_cost_s
        return cost is not None and self._policy.inline_max_s > 0 and rows * cost <= self._policy.inline_max_s

    def _spreads(self, rows: int, inline: bool) -> bool:
        """Whether a lone request's batch of ``rows`` runs on every core: the runner has that way, the batch would
        gain from it (one not fast enough for the event loop does), and the server is otherwise quiet."""
        if self._may_spread is None:
            return False
        if inline and rows * (self._row_cost_s or 0.0) < LONE_SPREAD_MIN_S:
            return False
        return self._may_spread()

    def retry_after_s(self, queued_rows: int) -> int:
        """Seconds until ``queued_rows`` have likely run: batches per instance times the batch time, at least 1."""
        batches = math.ceil(queued_rows / self._policy.max_batch_size) / self._policy.instances
        return max(1, math.ceil(batches * self._batch_ema_s))

    def dispatch(self, items: list[Pending], lone: bool = False) -> None:
        """Run a batch on a free instance: inline (done when this returns) when predicted fast, else threaded, with
        ``run_lone`` when ``lone`` (one request, nothing else queued or on its way)."""
        instance = self._free.popleft()
        loop = asyncio.get_running_loop()
        now = loop.time()
        waits = tuple(now - item.enqueued for item in items)
        rows = sum(item.rows for item in items)
        inline = self.runs_inline(rows)
        spread = lone and self._spreads(rows, inline)
        if inline and not spread:
            self._complete(instance, items, rows, waits, _execute(self._run_inline, instance, items))
            return
        run = self._run_lone if spread else self._run_batch
        task = loop.create_task(self._run_threaded(run, instance, items, rows, waits))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_threaded(
        self, run: RunBatch, instance: int, items: list[Pending], rows: int, waits: tuple[float, ...]
    ) -> None:
        loop = asyncio.get_running_loop()
        out = self._staging(instance, rows) if self._staging is not None and len(items) > 1 else None
        result = await loop.run_in_executor(self._executor, _execute, run, instance, items, out)
        self._complete(instance, items, rows, waits, result)

    def _complete(
        self,
        instance: int,
        items: list[Pending],
        rows: int,
        waits: tuple[float, ...],
        result: BatchOutcome | Exception,
    ) -> None:
        """Free the instance, then answer every caller of the batch (``rows`` in all): its outputs, or the error."""
        self._free.append(instance)
        self._freed.set()
        if isinstance(result, Exception):
            logger.error(
                "model '%s': batch of %d rows (%d requests) failed", self._name, rows, len(items), exc_info=result
            )
            for item in items:
                if not item.future.done():
                    item.future.set_exception(result)
            return
        for item, output in zip(items, result.outputs, strict=True):
            if not item.future.done():
                item.future.set_result(output)
        cost, took = result.run_s / rows, result.merge_s + result.run_s + result.split_s
        self._row_cost_s = cost if self._row_cost_s is None else 0.8 * self._row_cost_s + 0.2 * cost
        self._batch_ema_s = took if not self._batch_ema_s else 0.8 * self._batch_ema_s + 0.2 * took
        self._observer.on_batch(BatchTiming(rows, waits, result.merge_s, result.run_s, result.split_s))

    async def stop(self) -> None:
        """Wait for running batches, then release the worker threads."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)
