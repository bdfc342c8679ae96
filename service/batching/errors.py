"""The batcher's refusals: why a request was not run. The data plane turns each into one HTTP status."""

from __future__ import annotations


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
