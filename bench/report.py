"""The suite's results as Markdown tables and one PNG (the performance bars are computed in ``bench.bars``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from bench.int8 import markdown as int8_markdown  # noqa: E402
from bench.kinds import GRPC_ROUTES, ROUTE_NAMES, SERVER_NAMES, Route  # noqa: E402
from bench.pairs import markdown as pairs_markdown  # noqa: E402
from bench.results import BenchResults, ModelResult  # noqa: E402
from bench.turns import markdown as turns_markdown  # noqa: E402
from loadtest.results import StepReport  # noqa: E402


def _cell(step: StepReport | None) -> str:
    if step is None or step.latency is None:
        return "-"
    latency = step.latency
    errors = f" ⚠{sum(step.errors.values())} err" if step.errors else ""
    return f"{step.images_per_s:,.0f} ({latency.p50_ms:.1f}/{latency.p99_ms:.1f}){errors}"


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}" if value and reference else "-"


def _model_table(result: ModelResult) -> list[str]:
    raw = result.raw
    concurrency = sorted(
        {step.load.level for kind in SERVER_NAMES for route in ROUTE_NAMES for step in result.steps(kind, route)}
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
    for route, route_name in ROUTE_NAMES.items():
        base = result.peak("baseline", route)
        for kind, label in SERVER_NAMES.items():
            best = result.peak(kind, route)
            if best is None:
                continue
            by_c = {step.load.level: step for step in result.steps(kind, route)}
            batch = best.server.mean_batch_size if best.server else None
            cpu = best.server_process.cpu_percent if best.server_process else None
            cells = [
                route_name,
                label,
                *(_cell(by_c.get(c)) for c in concurrency),
                f"{best.images_per_s:,.1f}",
                _ratio(best.images_per_s, raw.best_images_per_s),
                _ratio(best.images_per_s, base.images_per_s if base else None),
                f"{batch:.1f}" if batch else "-",
                f"{cpu:.0f}%" if cpu is not None else "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _grpc_table(result: ModelResult) -> list[str]:
    """The service's gRPC routes beside its HTTP v2 binary route, concurrency by concurrency, as ratios (no bar)."""
    http = {step.load.level: step for step in result.steps("service", "tensor")}
    grpc = {route: {step.load.level: step for step in result.steps("service", route)} for route in GRPC_ROUTES}
    levels = sorted(level for level in http if any(level in steps for steps in grpc.values()))
    if not levels:
        return []
    head = ["concurrency", ROUTE_NAMES["tensor"]]
    for route in GRPC_ROUTES:
        head += [ROUTE_NAMES[route], f"{ROUTE_NAMES[route]} / HTTP"]
    head.append("gen CPU (HTTP, " + ", ".join(ROUTE_NAMES[route] for route in GRPC_ROUTES) + ")")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for level in levels:
        reference = http[level]
        cells = [f"c={level:g}", _cell(reference)]
        cpus: list[float | None] = [reference.generator.cpu_percent]
        for route in GRPC_ROUTES:
            step = grpc[route].get(level)
            cells += [_cell(step), _ratio(step.images_per_s if step else None, reference.images_per_s)]
            cpus.append(step.generator.cpu_percent if step else None)
        cells.append(" / ".join("-" if cpu is None else f"{cpu:.0f}%" for cpu in cpus))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: BenchResults) -> str:
    """The whole run as Markdown: context, performance bars, raw ORT, the HTTP matrix per model, and the extras."""
    m, pinning = results.machine, results.pinning
    versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
    out = [
        "# Benchmark results",
        "",
        f"`{results.command}` ({results.profile}), {results.started_at}, {results.elapsed_s:.0f} s.",
        f"Machine: {m.cpu_model}, {m.logical_cpus} logical CPUs (usable {m.usable_cpus}), "
        f"{m.memory_gib} GiB, load average at start {m.load_average}; Python {m.python}; {versions}.",
        f"Pinning: servers and raw ORT on CPUs {pinning.server_cpus}, load generator on "
        f"{pinning.client_cpus}. Every server at its default settings.",
        "",
        "## Performance bars, as ratios within this run",
        "",
        "| bar | measured | target | ratio | holds |",
        "|---|---|---|---|---|",
    ]
    for bar in results.bars:
        ratio = "-" if bar.ratio is None else f"{bar.ratio:.2f}"
        holds = {True: "yes", False: "**no**", None: "not measured"}[bar.met]
        out.append(f"| {bar.name} | {bar.measured} | {bar.target} | {ratio} | {holds} |")
    out += ["", "## Raw ONNX Runtime `session.run`, in-process (images/s; best setting, first pass)", ""]
    out += [
        "| model | best setting | b1 | b2 | b4 | b8 | b16 | b32 | batch-1 p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, result in results.models.items():
        raw = result.raw
        cells = [f"{point.images_per_s:,.0f}" for point in raw.best.points]
        out.append(f"| {model} | {raw.best.setting.label} | " + " | ".join(cells) + f" | {raw.batch1_p50_ms:.2f} |")
    out += [
        "",
        "## Over HTTP (and gRPC): images/s (p50/p99 ms) per client concurrency",
        "",
        "Closed loop, one image (or 32 rows) per request, the same client (`loadtest`) and payload bytes for every "
        "server. Images/s count the answers inside each measured window; latencies are those of the requests sent "
        "in it. `/ raw best` divides by the higher of two raw ORT passes (before and after the servers); `batch` is "
        "the server's mean batch size from its /metrics; `server CPU` is the server process's CPU (200% = 2 cores).",
        "",
    ]
    for model, result in results.models.items():
        out += [f"### {model}", "", *_model_table(result), ""]
    for model, result in results.models.items():
        out += pairs_markdown(model, result.pairs) if result.pairs else []
        service = result.servers.get("service")
        out += turns_markdown(model, service.turns) if service and service.turns else []
    for model, result in results.models.items():
        if grpc := _grpc_table(result):
            out += [
                f"## gRPC beside HTTP v2 binary: {model}, the service, images/s (p50/p99 ms)",
                "",
                "The same tensors and concurrencies over the service's KServe v2 gRPC endpoint in the same session: "
                "unary `ModelInfer`, and `ModelStreamInfer` with one stream per user. Each user has a connection of "
                "its own over either protocol. Reported as measured; there is no bar. A generator CPU near 100% means "
                "the client, not the server, may be the limit (a gRPC call costs the Python client several times "
                "an HTTP request).",
                "",
                *grpc,
                "",
            ]
    out += [
        "## Memory: resident MiB of each server process after its sweeps (the first is the one started)",
        "",
        "| model | server | processes | total |",
        "|---|---|---|---|",
    ]
    for model, result in results.models.items():
        for kind, runs in result.servers.items():
            if runs and runs.memory_mib:
                each = ", ".join(f"{mib:,.0f}" for mib in runs.memory_mib)
                out.append(f"| {model} | {SERVER_NAMES[kind]} | {each} | {sum(runs.memory_mib):,.0f} |")
    out.append("")
    out += int8_markdown(results.int8)
    pre = results.preprocess
    out += [
        "## Preprocessing alone (`service.preprocess.preprocess`, one thread)",
        "",
        f"{pre.images_per_cpu_s:,.0f} images per CPU-second ({pre.images_per_s_wall:,.0f}/s wall), "
        f"224x224 JPEGs of {pre.mean_jpeg_bytes:,} bytes -> {pre.output_shape}.",
        "",
    ]
    cost = results.client_cost
    if cost:
        out += [
            "## Load generator: client CPU per request (LeNet-5 v2 tensors over HTTP and gRPC, concurrency 8)",
            "",
            "| client | CPU µs/request | requests/s |",
            "|---|---|---|",
        ]
        out += [
            f"| {name} | {run.cpu_us_per_request:.0f} | {run.requests_per_s:,.0f} |"
            for name, run in cost.clients.items()
        ]
        out.append("")
    if results.skipped:
        out += ["## Skipped", "", *(f"- {s}" for s in results.skipped), ""]
    return "\n".join(out)


def plot_results(results: BenchResults, path: Path) -> None:
    """Images/s against concurrency per model: each server on both routes, raw ORT's best as a line."""
    models = results.models
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    routes: tuple[tuple[Route, str], ...] = (("tensor", "-"), ("image", ":"), ("grpc", "--"), ("grpc_stream", "-."))
    for ax, (model, result) in zip(axes[0], models.items(), strict=True):
        for kind, label in SERVER_NAMES.items():
            for route, style in routes:
                steps = result.steps(kind, route)
                if steps:
                    ax.plot(
                        [step.load.level for step in steps],
                        [step.images_per_s for step in steps],
                        style,
                        marker="o",
                        label=f"{label}, {ROUTE_NAMES[route]}",
                    )
        ax.axhline(result.raw.best_images_per_s, color="black", linestyle="--", label="raw ORT best")
        ax.set(title=model, xlabel="client concurrency", ylabel="images/s")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(f"{results.machine.cpu_model}: {results.command}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
