"""The sweep as a PNG: latency percentiles against offered load, and throughput against the same axis.

Closed-loop sweeps put concurrency on the x axis; open-loop sweeps the asked rate, with the ideal
achieved-equals-asked line and the rate really offered drawn, so saturation shows as the point where throughput
leaves it and a generator that fell short shows as such.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from loadtest.report import failed_steps  # noqa: E402
from loadtest.results import ClosedLoad, StepReport, SweepReport  # noqa: E402

#: Outcomes drawn as timeouts; every other non-2xx outcome is an error.
TIMEOUTS = ("timeout", "unfinished")


def plot(report: SweepReport, path: Path) -> None:
    """Draw the two panels of ``report`` into ``path`` (PNG): every step, even one where nothing succeeded.

    Latency percentiles are drawn where a step had successes (a gap where it had none); the throughput panel draws
    successes, errors and timeouts per second as three series from zero, and for open loops the rate offered, so a
    step that collapsed shows as what it was instead of vanishing.
    """
    steps = report.steps
    if not steps:
        raise ValueError("nothing to plot: the report has no step")
    first = steps[0].load
    closed = isinstance(first, ClosedLoad)
    x = [step.load.level for step in steps]
    x_label = (
        "concurrency (closed loop)" if isinstance(first, ClosedLoad) else f"asked rate, requests/s ({first.arrival})"
    )
    figure, (latency_axes, throughput_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    nan = float("nan")
    for label, field in (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")):
        values = [nan if step.latency is None else getattr(step.latency, field) for step in steps]
        latency_axes.plot(x, values, marker="o", label=label)
    latency_axes.set(xlabel=x_label, ylabel="latency of successes, ms", title="Latency percentiles vs load")
    latency_axes.set_yscale("log")
    series = {
        "successes": [step.throughput_rps for step in steps],
        "errors": [_per_s(step, timeouts=False) for step in steps],
        "timeouts": [_per_s(step, timeouts=True) for step in steps],
    }
    for label, values in series.items():
        throughput_axes.plot(x, values, marker="o", label=label)
    if not closed:
        throughput_axes.plot(x, x, linestyle="--", color="grey", label="asked")
        offered = [nan if step.offered_rps is None else step.offered_rps for step in steps]
        throughput_axes.plot(x, offered, marker="x", linestyle=":", color="black", label="offered")
    throughput_axes.set(xlabel=x_label, ylabel="requests/s", title="Throughput")
    throughput_axes.set_ylim(bottom=0)
    for axes in (latency_axes, throughput_axes):
        if closed and len(set(x)) > 1 and min(x) > 0:
            axes.set_xscale("log", base=2)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    failed = ", ".join(step.load.label for step in failed_steps(report))
    target = report.target
    title = f"{target.model} @ {target.url}: {target.workload}" + (f"\nFAILED steps: {failed}" if failed else "")
    figure.suptitle(title, fontsize=10, color="red" if failed else "black")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _per_s(step: StepReport, timeouts: bool) -> float:
    """Errors (or timeouts) of the step per second of its window."""
    count = sum(n for outcome, n in step.errors.items() if (outcome in TIMEOUTS) == timeouts)
    return count / step.window_s if step.window_s > 0 else 0.0
