"""The sweep as a PNG: latency percentiles against offered load, and throughput against the same axis.

Closed-loop sweeps put concurrency on the x axis; open-loop sweeps the offered rate, with the ideal
achieved-equals-offered line drawn so saturation shows as the point where throughput leaves it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from loadtest.results import ClosedLoad, SweepReport  # noqa: E402


def plot(report: SweepReport, path: Path) -> None:
    """Draw the two panels of ``report`` into ``path`` (PNG).

    Raises:
        ValueError: the report has no step with latencies to draw.
    """
    measured = [(step, step.latency) for step in report.steps if step.latency is not None]
    if not measured:
        raise ValueError("nothing to plot: no step of the report completed a request")
    first = measured[0][0].load
    closed = isinstance(first, ClosedLoad)
    x = [step.load.level for step, _ in measured]
    x_label = (
        "concurrency (closed loop)" if isinstance(first, ClosedLoad) else f"offered rate, requests/s ({first.arrival})"
    )
    figure, (latency_axes, throughput_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    curves = {
        "p50": [latency.p50_ms for _, latency in measured],
        "p90": [latency.p90_ms for _, latency in measured],
        "p99": [latency.p99_ms for _, latency in measured],
        "p99.9": [latency.p999_ms for _, latency in measured],
    }
    for label, values in curves.items():
        latency_axes.plot(x, values, marker="o", label=label)
    latency_axes.set(xlabel=x_label, ylabel="latency, ms", title="Latency percentiles vs offered load")
    latency_axes.set_yscale("log")
    throughput = [step.throughput_rps for step, _ in measured]
    throughput_axes.plot(x, throughput, marker="o", label="achieved")
    if not closed:
        throughput_axes.plot(x, x, linestyle="--", color="grey", label="offered")
    throughput_axes.set(xlabel=x_label, ylabel="requests/s", title="Throughput")
    for axes in (latency_axes, throughput_axes):
        if closed and len(set(x)) > 1 and min(x) > 0:
            axes.set_xscale("log", base=2)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    target = report.target
    figure.suptitle(f"{target.model} @ {target.url}: {target.workload}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
