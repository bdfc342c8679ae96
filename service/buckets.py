"""Batch buckets: the few batch sizes a GPU session ever runs, so buffers, warm-up and engines cover only those.

A GPU batch of ``rows`` is padded up to the smallest bucket that holds it. Without buckets, a model with
``max_batch_size`` 64 would need a buffer set, a warm-up run (an exhaustive cuDNN algorithm search) and TensorRT
coverage for each of 64 shapes; with them, seven. Padding costs at most one row in two of compute, on a device where
a batch's time grows far slower than its size. CPU sessions run every size unpadded: there the work is the rows.
"""

from __future__ import annotations

import bisect


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """The powers of two below ``max_batch_size``, and ``max_batch_size`` itself: 1, 2, 4, …, max."""
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return tuple(sizes)


def bucket_for(rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding ``rows`` (``rows`` must not exceed the largest)."""
    return buckets[bisect.bisect_left(buckets, rows)]
