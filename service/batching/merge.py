"""Merge requests into one batch along the batch axis, and split the batch's outputs back, row for row.

Kept apart from the queueing in batcher.py: these are pure array functions, tested on their own.
A batch of one request is passed through untouched (no copy), so an idle server pays nothing for batching.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

Tensors = Mapping[str, npt.NDArray[np.generic]]


def merge_inputs(
    requests: Sequence[Tensors], out: Mapping[str, npt.NDArray[np.generic]] | None = None
) -> dict[str, npt.NDArray[np.generic]]:
    """Concatenate each named input of every request along axis 0.

    Args:
        requests: One mapping per request; every mapping has the same names, arrays with a leading batch axis.
        out: Arrays of exactly the merged shape to concatenate into (a GPU runner's pinned staging buffers, which
            saves a copy); a lone request is still passed through untouched.

    Returns:
        One array per name holding every request's rows, in request order.
    """
    if len(requests) == 1:
        return dict(requests[0])
    if out is None:
        return {name: np.concatenate([r[name] for r in requests], axis=0) for name in requests[0]}
    return {name: np.concatenate([r[name] for r in requests], axis=0, out=out[name]) for name in requests[0]}


def split_outputs(outputs: Tensors, rows: Sequence[int]) -> list[dict[str, npt.NDArray[np.generic]]]:
    """Slice each output along axis 0 into consecutive pieces of ``rows[i]`` rows (views, not copies).

    Raises:
        ValueError: when an output's batch axis does not hold ``sum(rows)`` rows, which means the model
            did not return one row per input row and the split would hand callers someone else's answer.
    """
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(
                f"output '{name}' has shape {list(array.shape)}, expected {total} rows on axis 0 (one per input row)"
            )
    if len(rows) == 1:
        return [dict(outputs)]
    pieces: list[dict[str, npt.NDArray[np.generic]]] = []
    start = 0
    for n in rows:
        pieces.append({name: array[start : start + n] for name, array in outputs.items()})
        start += n
    return pieces
