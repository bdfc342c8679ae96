"""The GPU check's report as typed values, written as JSON (``gpu_report.json``) and Markdown (``gpu_report.md``).

A figure is a number when it was measured and a string saying why not otherwise (``unmeasured: no GPU``,
``skipped: time budget``), so a reader never mistakes a missing figure for a zero. docs/gpu.md explains each one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Figure = float | str
NO_GPU = "unmeasured: no GPU"


@dataclass
class Probe:
    """One model load the way the server loads it, in its own process, under one provider list and config."""

    label: str
    model: str
    requested: str  # CNNSERVE_PROVIDERS, e.g. "tensorrt,cuda"
    precision: str  # config.json's precision
    runs: str = ""  # the provider ORT really runs ("CUDAExecutionProvider"), or "none: <error>"
    device: str = ""  # the runner's device: cuda | cpu
    load_s: Figure = ""  # session creation (engine builds included) + warm-up, as ModelLoader.load took it
    gpu_memory_mb: Figure = ""  # this process's GPU memory after the load (nvidia-smi), else the device's rise
    stdout: str = ""  # everything the load printed on stdout: the service promises nothing
    logged: list[str] = field(default_factory=list)  # its stderr lines (log records, ORT's own lines), trimmed
    error: str = ""


@dataclass
class Parity:
    """A precision's outputs against PyTorch fp32 on the same uint8 images, and the tolerance the service sets."""

    precision: str  # the load's label: fp32, tf32, fp16, fp32 + cuda graphs, cpu fp32
    provider: str  # short name of the provider that really ran: cpu | cuda | tensorrt
    max_abs_diff: Figure
    relative_diff: Figure  # max abs diff / max(1, max |reference|): the measure service.precision's tolerances use
    tolerance: Figure
    within: bool | str


@dataclass
class Latency:
    """Client-side latency of one batch bucket on one path, in-process (no HTTP)."""

    path: str  # session.run | bound runner | cuda graphs | bound runner (tensorrt fp16)
    batch: int
    p50_ms: Figure
    p99_ms: Figure
    runs: int


@dataclass
class HttpStep:
    """One concurrency of ``python -m loadtest`` against a real ``python -m service`` on 127.0.0.1."""

    concurrency: int
    images_per_s: Figure
    p50_ms: Figure
    p99_ms: Figure
    ok: int
    errors: dict[str, int]


@dataclass
class Http:
    """The HTTP figure: what was served, how, and each load step."""

    model: str
    input_datatype: str  # UINT8, or FP32 when the uint8 graft failed (said in notes)
    batch: int
    workers: int
    providers: str
    precision: str
    steps: list[HttpStep]
    best_images_per_s: Figure


@dataclass
class Report:
    """Everything gpu_check.py found; written after every step, so a run stopped early leaves what it had."""

    mode: str  # gpu | cpu (no GPU: every GPU figure unmeasured) | cpu-exercise (the GPU plan run on CPU)
    started_at: str
    environment: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)  # present: bool, reason: str
    providers: list[Probe] = field(default_factory=list)  # tiny model, one probe per requested provider list
    loads: list[Probe] = field(default_factory=list)  # main model, one probe per precision / CUDA graphs
    parity: list[Parity] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    http: Http | None = None
    unmeasured: dict[str, str] = field(default_factory=dict)  # section -> why it has no figures
    notes: list[str] = field(default_factory=list)
    finished_at: str = ""
    duration_s: float = 0.0

    def write(self, out: Path) -> None:
        """Write ``gpu_report.json`` and ``gpu_report.md`` into ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_report.json").write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        (out / "gpu_report.md").write_text(markdown(self))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:,.2f}"
    return str(value).replace("|", "/").replace("\n", " ")[:160]


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _probe_row(p: Probe) -> list[object]:
    config = p.precision if p.label.startswith("providers") else p.label
    return [p.model, config, p.requested, p.runs, p.device, p.load_s, p.gpu_memory_mb, repr(p.stdout[:60]), p.error]


def markdown(report: Report) -> str:
    """The report for people: one table per section, the reason where a section has no figures."""
    env = report.environment
    lines = [
        f"# GPU check ({report.mode}), {report.started_at}",
        "",
        f"GPU: {report.gpu.get('name') or 'none'}; {report.gpu.get('reason', '')}",
        f"onnxruntime {env.get('onnxruntime')} ({', '.join(env.get('available_providers', []))}); "
        f"torch {env.get('torch')}; {report.duration_s:.0f} s",
        "",
        "## Which provider runs",
        "",
        *_table(
            ["model", "config", "requested", "runs", "device", "load+warm-up s", "GPU MiB", "stdout", "error"],
            [_probe_row(p) for p in report.providers + report.loads],
        ),
    ]
    fallbacks = [p for p in report.providers if p.logged and p.requested == "tensorrt,cuda"]
    fallbacks.sort(key=lambda p: "hidden" not in p.label)  # with TensorRT staged, the load that hid it
    for probe in fallbacks[:1]:
        lines += ["", f"Logged when {probe.requested} was requested (runs {probe.runs}):", "", "```"]
        lines += [line[:200] for line in probe.logged[:12]] + ["```"]
    sections: list[tuple[str, str, list[str], list[list[object]]]] = [
        (
            "parity",
            "Parity with PyTorch fp32",
            ["precision", "provider", "max abs diff", "relative", "tolerance", "within"],
            [[p.precision, p.provider, p.max_abs_diff, p.relative_diff, p.tolerance, p.within] for p in report.parity],
        ),
        (
            "latency",
            "Latency per batch bucket (in-process)",
            ["path", "batch", "p50 ms", "p99 ms", "runs"],
            [[x.path, x.batch, x.p50_ms, x.p99_ms, x.runs] for x in report.latency],
        ),
    ]
    http = report.http
    http_rows: list[list[object]] = [
        [s.concurrency, s.images_per_s, s.p50_ms, s.p99_ms, s.ok, s.errors] for s in (http.steps if http else [])
    ]
    http_header = ["concurrency", "images/s", "p50 ms", "p99 ms", "ok", "errors"]
    sections.append(("http", "Images/s over HTTP", http_header, http_rows))
    for key, title, header, rows in sections:
        lines += ["", f"## {title}", ""]
        if key == "http" and http is not None:
            best = _cell(http.best_images_per_s)
            lines += [
                f"{http.model}, {http.input_datatype} input, batch {http.batch} per request, {http.workers} "
                f"worker(s), providers {http.providers}, precision {http.precision}: best {best} images/s",
                "",
            ]
        lines += _table(header, rows) if rows else [report.unmeasured.get(key, NO_GPU)]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in report.notes]]
    return "\n".join(lines) + "\n"
