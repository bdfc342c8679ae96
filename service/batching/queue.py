"""The batcher's queue: admission, announced arrivals, taking a batch, and deadline expiry (in one place).

Requests wait here as ``Pending`` items until the collector takes a batch. A partial batch waits up to the queue
delay only while announced arrivals are on their way (their bodies are still being read or decoded), so a lone
request never waits for nobody. Every queued request with a deadline carries a timer; whether it fires in the queue
or while its batch is forming, ``_expire`` is the one place a request is failed for its deadline.
Deadlines are ``time.monotonic()`` instants read fresh at each check (the loop's clock is cached per iteration):
at admission, at least ``DEADLINE_RESOLUTION_S`` must be left; right before starting, it must not have passed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from time import monotonic

from service.batching.errors import BatcherStopped, BatchTooLarge, ClientGone, DeadlineExpired, QueueFull
from service.batching.merge import Tensors
from service.batching.policy import BatchPolicy

#: The finest deadline the queue promises to honour: a request with less than this left when it is admitted is
#: refused at once (timers fire on a millisecond clock; such a request would mostly run late or race its timer).
DEADLINE_RESOLUTION_S = 1e-3


class Pending:
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
        self.settled = False  # left the queue's live count (taken, expired, or dropped)


class Arrival:
    """A request announced before it is ready to queue; closing it (once) tells the queue it arrived or gave up.

    Use as a context manager; ``Batcher.infer(arrival=...)`` closes it when the request is queued.
    """

    __slots__ = ("_on_close",)

    def __init__(self, on_close: Callable[[], None]) -> None:
        self._on_close: Callable[[], None] | None = on_close

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop counting this arrival (idempotent)."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


class RequestQueue:
    """Bounded FIFO of ``Pending`` requests, counted by requests and by rows.

    Args:
        policy: Batch size, queue bound and delay.
        name: The model's name, for messages.
        retry_after_s: Estimates, from the queued rows, when a full queue will have room (for ``QueueFull``).
    """

    def __init__(self, policy: BatchPolicy, name: str, retry_after_s: Callable[[int], int]) -> None:
        self._policy = policy
        self._name = name
        self._retry_after_s = retry_after_s
        self._items: deque[Pending] = deque()
        self.live = 0  # queued requests whose callers still wait (the queue-depth gauge)
        self._live_rows = 0
        self._expected = 0  # open arrivals
        self._wake = asyncio.Event()  # work queued, an arrival closed, a batch's wait ended, or stopping
        self._stopping = False
        self._target_rows = policy.preferred_batch_size or policy.max_batch_size

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing announced: a request now would have no company to wait for."""
        return not self._items and not self._expected

    def announce(self) -> Arrival:
        """Count a request that will be queued soon, so a forming batch may wait for it."""
        self._expected += 1
        return Arrival(self._arrived)

    def _arrived(self) -> None:
        self._expected -= 1
        self._wake.set()

    def admit(self, rows: int, deadline: float | None) -> None:
        """Refuse a request that can never run here (``deadline``: a ``time.monotonic()``), before it is queued.

        Raises:
            BatcherStopped, BatchTooLarge, QueueFull, DeadlineExpired: see each class.
        """
        if self._stopping:
            raise BatcherStopped(f"model '{self._name}' is shutting down and accepts no new requests")
        if rows > self._policy.max_batch_size:
            raise BatchTooLarge(
                f"request carries {rows} rows but model '{self._name}' batches at most "
                f"{self._policy.max_batch_size}; split it into smaller requests"
            )
        if self.live >= self._policy.max_queue_size:
            raise QueueFull(self.live, self._policy.max_queue_size, self._retry_after_s(self._live_rows))
        if deadline is None:
            return
        left = deadline - monotonic()
        if left <= 0:
            raise DeadlineExpired(f"deadline already passed {-1e3 * left:.3f} ms before queueing")
        if left < DEADLINE_RESOLUTION_S:
            raise DeadlineExpired(
                f"deadline is {1e3 * left:.3f} ms away at queueing, below the deadline resolution "
                f"of {1e3 * DEADLINE_RESOLUTION_S:g} ms; give the request a longer timeout"
            )

    def put(self, item: Pending) -> None:
        """Queue an admitted request; its deadline timer starts now."""
        if item.deadline is not None:
            self._arm(item, item.deadline)
        self._items.append(item)
        self.live += 1
        self._live_rows += item.rows
        self._wake.set()

    def stop(self) -> None:
        """Refuse new requests from now on; what is queued still runs."""
        self._stopping = True
        self._wake.set()

    async def wait_for_work(self) -> bool:
        """Wait until a request is queued; False once stopping with nothing left to run."""
        while not self.live:
            if self._stopping:
                return False
            self._wake.clear()
            await self._wake.wait()
        return True

    async def next_batch(self) -> list[Pending]:
        """Take the next batch: what is queued now, plus announced arrivals for up to the queue delay.

        Stops waiting once the preferred size is reached, nothing more is announced, the delay since the first
        request's arrival has passed, or the next request does not fit. Returns the requests that may start now
        (empty when every one expired or was dropped meanwhile).
        """
        loop = asyncio.get_running_loop()
        limit = self._policy.max_batch_size
        items, rows = self._take(limit)
        if items and rows < self._target_rows and self._expected and self._policy.max_queue_delay_s > 0:
            until = items[0].enqueued + self._policy.max_queue_delay_s
            timer = loop.call_at(until, self._wake.set)
            while rows < self._target_rows and self._expected and loop.time() < until:
                self._wake.clear()
                await self._wake.wait()
                more, n = self._take(limit - rows)
                items += more
                rows += n
                if self._items and not more and not self._items[0].settled:
                    break  # the next request does not fit: this batch is as full as it gets
            timer.cancel()
        return self._starting(items)

    def _take(self, room: int) -> tuple[list[Pending], int]:
        """Pop queued requests in order while they fit ``room`` rows, dropping finished and abandoned ones."""
        taken: list[Pending] = []
        rows = 0
        items = self._items
        while items:
            item = items[0]
            if item.future.done():  # expired, or its caller was cancelled
                items.popleft()
                self.drop(item)
                continue
            if item.is_gone is not None and item.is_gone():
                items.popleft()
                self.drop(item)
                item.future.set_exception(ClientGone("client disconnected while queued; request dropped"))
                continue
            if rows + item.rows > room:
                break
            items.popleft()
            self._settle(item)
            taken.append(item)
            rows += item.rows
        return taken, rows

    def _starting(self, items: list[Pending]) -> list[Pending]:
        """The taken requests that may start: overdue ones expire, the rest lose their deadline timers."""
        ready = []
        now = monotonic()  # fresh: the batch may have formed over several loop iterations
        for item in items:
            if item.future.done():  # expired or cancelled while the batch was forming
                continue
            if item.deadline is not None and item.deadline <= now:  # due, its timer not yet run
                self._expire(item)
                continue
            if item.timer is not None:
                item.timer.cancel()
            ready.append(item)
        return ready

    def _arm(self, item: Pending, deadline: float) -> None:
        """Set (or re-set) the deadline timer for the time left, by the deadline's own clock."""
        item.timer = asyncio.get_running_loop().call_later(deadline - monotonic(), self._due, item, deadline)

    def _due(self, item: Pending, deadline: float) -> None:
        """The deadline timer: expire the request, or re-arm when the loop's coarser clock fired it early."""
        if deadline > monotonic():
            self._arm(item, deadline)
        else:
            self._expire(item)

    def _expire(self, item: Pending) -> None:
        """Fail a request whose deadline passed before it started; it never runs."""
        self.drop(item)
        if not item.future.done():
            item.future.set_exception(DeadlineExpired("deadline passed while queued; the request did not run"))

    def drop(self, item: Pending) -> None:
        """Stop counting ``item`` and its deadline (taken, expired, or its caller gone: skipped when its turn comes)."""
        self._settle(item)
        if item.timer is not None:
            item.timer.cancel()

    def _settle(self, item: Pending) -> None:
        """Take an item out of the live count exactly once."""
        if not item.settled:
            item.settled = True
            self.live -= 1
            self._live_rows -= item.rows
