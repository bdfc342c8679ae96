"""Latency statistics: exact percentiles of the client's samples, and quantiles from Prometheus histogram deltas.

Client-side percentiles use the nearest-rank definition (every reported value was really observed; p99.9 of
fewer than 1,000 samples is the maximum). Server-side quantiles follow PromQL's ``histogram_quantile``: linear
interpolation inside the bucket holding the rank, so they are only as fine as the server's buckets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Percentiles every report carries.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ascending ``sorted_values``: the smallest value >= p % of them.

    Raises:
        ValueError: no values, or ``p`` outside (0, 100].
    """
    if not sorted_values:
        raise ValueError("percentile of no samples; the step completed no request")
    if not 0.0 < p <= 100.0:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles, mean and max of one step's latencies, in seconds."""

    count: int
    mean_s: float
    max_s: float
    percentiles_s: dict[float, float]

    @classmethod
    def of(cls, latencies_s: Sequence[float]) -> LatencySummary | None:
        """Summarise samples (any order); None when there are none."""
        if not latencies_s:
            return None
        ordered = sorted(latencies_s)
        return cls(
            count=len(ordered),
            mean_s=math.fsum(ordered) / len(ordered),
            max_s=ordered[-1],
            percentiles_s={p: percentile(ordered, p) for p in PERCENTILES},
        )


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram's cumulative buckets: ``(upper bound, count of observations <= bound)``, ascending.

    The last bound is ``+inf``; ``count`` equals its cumulative count, ``sum`` the sum of observations.
    """

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, before: Histogram) -> Histogram:
        """Observations made between two scrapes (``self`` later than ``before``).

        Raises:
            ValueError: different bucket bounds, or counts that went down (the server restarted in between).
        """
        bounds = [b for b, _ in self.buckets]
        if bounds != [b for b, _ in before.buckets]:
            raise ValueError(f"bucket bounds changed between scrapes: {[b for b, _ in before.buckets]} -> {bounds}")
        deltas = tuple((b, now - then) for (b, now), (_, then) in zip(self.buckets, before.buckets, strict=True))
        if any(d < 0 for _, d in deltas) or self.count < before.count:
            raise ValueError(
                f"histogram counts went down ({before.count:g} -> {self.count:g}): the server restarted between "
                "scrapes, or several processes (uvicorn workers) answer /metrics with their own counters; the "
                "server-side figures of this step are unknown"
            )
        return Histogram(deltas, self.sum - before.sum, self.count - before.count)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """PromQL ``histogram_quantile(q, …)``; None without observations.

        The first bucket's lower bound is 0 (latencies and sizes are non-negative); a rank in the ``+Inf``
        bucket returns the largest finite bound, as Prometheus does.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is outside [0, 1]")
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank and cumulative > lower_count:
                if math.isinf(bound):
                    return lower_bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cumulative - lower_count)
            lower_bound, lower_count = bound, cumulative
        return lower_bound
