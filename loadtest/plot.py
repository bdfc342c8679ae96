"""The sweep as a PNG: latency percentiles against offered load, and throughput against the same axis.

Closed-loop sweeps put concurrency on the x axis; open-loop sweeps the offered rate, with the ideal
achieved-equals-offered line drawn so saturation shows as the point where throughput leaves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

_PERCENTILES = ("p50", "p90", "p99", "p99.9")


def plot(report: dict[str, Any], path: Path) -> None:
    """Draw the two panels of ``report`` into ``path`` (PNG).

    Raises:
        ValueError: the report has no step with latencies to draw.
    """
    steps = [s for s in report["steps"] if s["latency_ms"]]
    if not steps:
        raise ValueError("nothing to plot: no step of the report completed a request")
    closed = "concurrency" in steps[0]["load"]
    x = [s["load"]["concurrency"] if closed else s["load"]["rate_per_s"] for s in steps]
    x_label = "concurrency (closed loop)" if closed else f"offered rate, requests/s ({steps[0]['load']['arrival']})"
    figure, (latency_axes, throughput_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in _PERCENTILES:
        latency_axes.plot(x, [s["latency_ms"][key] for s in steps], marker="o", label=key)
    latency_axes.set(xlabel=x_label, ylabel="latency, ms", title="Latency percentiles vs offered load")
    latency_axes.set_yscale("log")
    throughput = [s["throughput_rps"] for s in steps]
    throughput_axes.plot(x, throughput, marker="o", label="achieved")
    if not closed:
        throughput_axes.plot(x, x, linestyle="--", color="grey", label="offered")
    throughput_axes.set(xlabel=x_label, ylabel="requests/s", title="Throughput")
    for axes in (latency_axes, throughput_axes):
        if closed and len(set(x)) > 1 and min(x) > 0:
            axes.set_xscale("log", base=2)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    target = report["target"]
    figure.suptitle(f"{target['model']} @ {target['url']}: {target['workload']}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
