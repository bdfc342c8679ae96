"""Merging requests into a batch and splitting outputs back, row for row."""

from __future__ import annotations

import numpy as np
import pytest

from service.batching.merge import merge_inputs, split_outputs


def test_merge_then_split_restores_every_request() -> None:
    requests = [{"x": np.full((n, 3), i, np.float32)} for i, n in enumerate([2, 1, 3])]
    merged = merge_inputs(requests)
    assert merged["x"].shape == (6, 3)
    pieces = split_outputs({"y": merged["x"] * 2}, [2, 1, 3])
    for i, (piece, n) in enumerate(zip(pieces, [2, 1, 3], strict=True)):
        np.testing.assert_array_equal(piece["y"], np.full((n, 3), 2 * i))


def test_a_single_request_is_not_copied() -> None:
    x = np.zeros((4, 2), np.float32)
    assert merge_inputs([{"x": x}])["x"] is x


def test_split_refuses_outputs_without_one_row_per_input_row() -> None:
    with pytest.raises(ValueError, match=r"output 'y' has shape \[5, 2\], expected 6 rows"):
        split_outputs({"y": np.zeros((5, 2))}, [3, 3])
