"""The suite's results as Markdown tables and one PNG (the bars themselves are computed in ``bench.bars``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from bench.bars import PATH_NAMES, SERVER_NAMES, peak, steps_of  # noqa: E402


def _cell(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    latency = step["latency_ms"]
    errors = f" ⚠{sum(step['errors'].values())} err" if step["errors"] else ""
    return f"{step['images_per_s']:,.0f} ({latency['p50']:.1f}/{latency['p99']:.1f}){errors}"


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}" if value and reference else "-"


def _model_table(results: dict[str, Any], model: str) -> list[str]:
    raw = results["models"][model]["raw"]
    concurrency = sorted(
        {s["load"]["concurrency"] for srv in SERVER_NAMES for p in PATH_NAMES for s in steps_of(results, model, srv, p)}
    )
    head = [
        "path",
        "server",
        *(f"c={c}" for c in concurrency),
        "peak img/s",
        "/ raw best",
        "/ baseline",
        "batch@peak",
        "server CPU@peak",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in PATH_NAMES:
        base = peak(results, model, "baseline", path)
        for server, label in SERVER_NAMES.items():
            best = peak(results, model, server, path)
            if best is None:
                continue
            by_c = {s["load"]["concurrency"]: s for s in steps_of(results, model, server, path)}
            batch = (best["server"] or {}).get("mean_batch_size")
            cpu = (best["server_process"] or {}).get("cpu_percent")
            cells = [
                PATH_NAMES[path],
                label,
                *(_cell(by_c.get(c)) for c in concurrency),
                f"{best['images_per_s']:,.1f}",
                _ratio(best["images_per_s"], raw["best_images_per_s"]),
                _ratio(best["images_per_s"], base["images_per_s"] if base else None),
                f"{batch:.1f}" if batch else "-",
                f"{cpu:.0f}%" if cpu is not None else "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole run as Markdown: context, bars, raw ORT, the HTTP matrix per model, and the extras."""
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    out = [
        "# Benchmark results",
        "",
        f"`{results['command']}` ({results['profile']}), {results['started_at']}, {results['elapsed_s']:.0f} s.",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs (usable {m['usable_cpus']}), "
        f"{m['memory_gib']} GiB, load average at start {m['load_average']}; Python {m['python']}; {versions}.",
        f"Pinning: servers and raw ORT on CPUs {results['pinning']['server_cpus']}, load generator on "
        f"{results['pinning']['client_cpus']}. Tuned service settings: {results['tuned_settings']}.",
        "",
        "## Bars (issue 4), as ratios within this run",
        "",
        "| bar | measured | target | ratio | holds |",
        "|---|---|---|---|---|",
    ]
    for bar in results["bars"]:
        ratio = "-" if bar["ratio"] is None else f"{bar['ratio']:.2f}"
        holds = {True: "yes", False: "**no**", None: "not measured"}[bar["met"]]
        out.append(f"| {bar['bar']} | {bar['measured']} | {bar['target']} | {ratio} | {holds} |")
    out += ["", "## Raw ONNX Runtime `session.run`, in-process (images/s; best setting, first pass)", ""]
    out += [
        "| model | best setting | b1 | b2 | b4 | b8 | b16 | b32 | batch-1 p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, data in results["models"].items():
        raw = data["raw"]
        best = next(s for s in raw["settings"] if s["setting"] == raw["best_setting"])
        cells = [f"{p['images_per_s']:,.0f}" for p in best["points"]]
        out.append(f"| {model} | {raw['best_setting']} | " + " | ".join(cells) + f" | {raw['batch1_p50_ms']:.2f} |")
    out += [
        "",
        "## Over HTTP: images/s (p50/p99 ms) per client concurrency",
        "",
        "Closed loop, one image (or 32 rows) per request, the same client (`loadtest`) and payload bytes for every "
        "server. Images/s count the answers inside each measured window; latencies are those of the requests sent "
        "in it. `/ raw best` divides by the higher of two raw ORT passes (before and after the servers); `batch` is "
        "the server's mean batch size from its /metrics; `server CPU` is the server process's CPU (200% = 2 cores).",
        "",
    ]
    for model in results["models"]:
        out += [f"### {model}", "", *_model_table(results, model), ""]
    pre = results.get("preprocess")
    if pre:
        out += [
            "## Preprocessing alone (`service.preprocess.preprocess`, one thread)",
            "",
            f"{pre['images_per_cpu_s']:,.0f} images per CPU-second ({pre['images_per_s_wall']:,.0f}/s wall), "
            f"224x224 JPEGs of {pre['mean_jpeg_bytes']:,} bytes -> {pre['output_shape']}.",
            "",
        ]
    cost = results.get("client_cost")
    if cost:
        out += [
            "## Load generator: client CPU per request (v2 binary, LeNet-5, concurrency 8)",
            "",
            "| client | CPU µs/request | requests/s |",
            "|---|---|---|",
        ]
        out += [
            f"| {k} | {v['cpu_us_per_request']:.0f} | {v['requests_per_s']:,.0f} |"
            for k, v in cost.items()
            if isinstance(v, dict)
        ]
        out.append("")
    if results["skipped"]:
        out += ["## Skipped", "", *(f"- {s}" for s in results["skipped"]), ""]
    return "\n".join(out)


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Images/s against concurrency per model: each server on both paths, raw ORT's best as a line."""
    models = list(results["models"])
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for server, label in SERVER_NAMES.items():
            for route, style in (("tensor", "-"), ("image", ":")):
                steps = steps_of(results, model, server, route)
                if steps:
                    ax.plot(
                        [s["load"]["concurrency"] for s in steps],
                        [s["images_per_s"] for s in steps],
                        style,
                        marker="o",
                        label=f"{label}, {PATH_NAMES[route]}",
                    )
        ax.axhline(
            results["models"][model]["raw"]["best_images_per_s"], color="black", linestyle="--", label="raw ORT best"
        )
        ax.set(title=model, xlabel="client concurrency", ylabel="images/s")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(f"{results['machine']['cpu_model']}: {results['command']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
