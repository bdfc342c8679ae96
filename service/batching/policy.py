"""The batcher's vocabulary: its policy (Triton's ``dynamic_batching`` with units in the names), the hook it runs
batches with, and the timings it reports per batch. Nothing here knows HTTP or ONNX.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.batching.merge import Tensors

#: ``run_batch(instance_index, merged_inputs) -> outputs``; instance ``i`` is never called concurrently.
RunBatch = Callable[[int, Tensors], Tensors]
#: ``staging(instance, rows)``: buffers of ``rows`` rows the instance's runner reads its inputs from, for a batch of
#: several requests to be merged straight into (None: the runner has none, merge into new arrays).
Staging = Callable[[int, int], Mapping[str, Any] | None]


@dataclass(frozen=True)
class BatchPolicy:
    """How batches form and where they run.

    Attributes:
        max_batch_size: Rows per batch, never exceeded.
        max_queue_delay_s: How long a partial batch may wait for announced arrivals (never for nobody).
        max_queue_size: Queued requests beyond which new ones are refused.
        preferred_batch_size: Stop waiting once this many rows are collected (0: ``max_batch_size``).
        instances: Batches that may run at once (one per model instance).
        inline_max_s: Batches predicted to run faster than this run on the event loop itself: for tiny models
            the two thread hops of an executor cost more than the model (0 disables).
    """

    max_batch_size: int
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 256
    preferred_batch_size: int = 0
    instances: int = 1
    inline_max_s: float = 0.0


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
