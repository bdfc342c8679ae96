"""Percentile maths of the client's samples (nearest rank) against first principles and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.stats import LatencySummary, percentile


def test_nearest_rank_on_a_known_list() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 50) == 7.0


def test_p999_of_fewer_than_a_thousand_samples_is_the_maximum() -> None:
    values = sorted(np.random.default_rng(0).exponential(size=999).tolist())
    assert percentile(values, 99.9) == values[-1]
    assert percentile(values + [1e9], 99.9) == 1e9  # 1,000 samples: rank 999.99 rounds up to the last


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300), st.floats(0.01, 100))
def test_percentile_is_the_smallest_value_covering_p_percent(values: list[float], p: float) -> None:
    ordered = sorted(values)
    result = percentile(ordered, p)
    assert result in ordered
    at_or_below = sum(1 for v in ordered if v <= result)
    assert at_or_below >= p / 100 * len(ordered) - 1e-9
    below = sum(1 for v in ordered if v < result)
    assert below < p / 100 * len(ordered) + 1e-9
    assert result == float(np.percentile(ordered, p, method="inverted_cdf"))


@pytest.mark.parametrize(("values", "p"), [([], 50), ([1.0], 0), ([1.0], 100.5)])
def test_percentile_refuses_nonsense(values: list[float], p: float) -> None:
    with pytest.raises(ValueError, match="no samples|outside"):
        percentile(values, p)


def test_summary_of_samples_in_any_order() -> None:
    summary = LatencySummary.of([0.003, 0.001, 0.002, 0.004])
    assert summary is not None
    assert summary.count == 4
    assert list(summary.percentiles_s) == [50.0, 90.0, 99.0, 99.9]
    assert summary.percentiles_s[50.0] == pytest.approx(0.002)
    assert summary.percentiles_s[90.0] == pytest.approx(0.004)
    assert summary.mean_s == pytest.approx(0.0025)
    assert summary.max_s == pytest.approx(0.004)
    assert LatencySummary.of([]) is None
    assert math.isfinite(summary.percentiles_s[99.9])
