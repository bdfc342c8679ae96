"""The GPU check: which provider runs, fallback, load time and memory, parity per precision, latency, HTTP images/s.

    python tests/gpu/gpu_check.py --out reports/gpu            # what run_on_gpu.sh runs on the GPU machine
    python tests/gpu/gpu_check.py --out /tmp/r --exercise-on-cpu --arch small_cnn   # the GPU plan, run on a CPU

Without a GPU that ONNX Runtime can use it only checks which provider runs for each requested list (on the
committed LeNet-5) and reports every GPU figure as "unmeasured: no GPU", in seconds. With one it exports a
ResNet-50 taking uint8 pixels (tests/gpu/gpu_models.py), loads it in a fresh process per configuration
(tests/gpu/gpu_probe.py), and loads it over HTTP (tests/gpu/gpu_http.py). Every step is bounded in count and time,
and the report (gpu_report.json, gpu_report.md in --out) is rewritten after each. docs/gpu.md explains the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cuda_libs
import numpy as np
import numpy.typing as npt
from gpu_report import NO_GPU, Http, HttpStep, Latency, Parity, Probe, Report
from gpu_steps import REPO_ROOT, SHORT, Budget, nvidia_smi, parity_row, run_probe

sys.path.insert(0, str(REPO_ROOT))  # service/ and export/ are imported from the repository root

PROVIDER_LISTS = ("tensorrt", "tensorrt,cuda", "cuda", "cpu")


@dataclass(frozen=True)
class Load:
    """One main-model load: CNNSERVE_PROVIDERS, config.json changes, latency paths measured, seconds allowed."""

    label: str
    providers: str
    changes: dict[str, Any]
    latency: str = ""  # comma-separated gpu_probe.py paths: session.run, bound
    timeout_s: float = 150
    after_http: bool = False  # may take minutes (a TensorRT engine build): run it after the HTTP figure


LOADS = (
    Load("cpu fp32", "cpu", {"precision": "fp32"}, timeout_s=90),
    Load("fp32", "cuda", {"precision": "fp32"}, "session.run,bound"),
    Load("tf32", "cuda", {"precision": "tf32"}, timeout_s=90),
    Load("fp32 + cuda graphs", "cuda", {"precision": "fp32", "optimization": {"cuda": {"graphs": True}}}, "bound"),
    Load("fp16", "tensorrt,cuda", {"precision": "fp16"}, "bound", timeout_s=240, after_http=True),
)


def environment(with_torch: bool) -> dict[str, Any]:
    """Versions, providers, the GPU as nvidia-smi names it, and the CUDA libraries found."""
    import onnxruntime as ort

    torch_version = "not imported (no GPU)"
    if with_torch:
        import torch

        torch_version = f"{torch.__version__} (CUDA {torch.version.cuda})"
    return {
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "onnxruntime_path": ort.__file__,
        "available_providers": ort.get_available_providers(),
        "torch": torch_version,
        "nvidia_smi": nvidia_smi("name,driver_version,memory.total,memory.used"),
        "cuda_libs": asdict(cuda_libs.find()),
        "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", ""),
    }


def check_providers(report: Report, work: Path, out: Path, budget: Budget) -> None:
    """Load the committed LeNet-5 under each provider list: what really runs, what is logged, what is printed."""
    repository = work / "tiny"
    shutil.copytree(REPO_ROOT / "models" / "lenet5_digits", repository / "lenet5_digits", dirs_exist_ok=True)
    for requested in PROVIDER_LISTS:
        probe = Probe(f"providers {requested}", "lenet5_digits", requested, "fp32")
        run_probe(work, out, budget, probe, repository, [], 90)
        report.providers.append(probe)
        report.write(out)
    if not cuda_libs.find().tensorrt_missing:  # TensorRT was staged: hide it once to see the fallback
        kept = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d and "tensorrt" not in d]
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(kept)}
        probe = Probe("providers tensorrt,cuda (TensorRT libraries hidden)", "lenet5_digits", "tensorrt,cuda", "fp32")
        run_probe(work, out, budget, probe, repository, [], 90, env)
        report.providers.append(probe)
        report.write(out)


def check_main_model(report: Report, args: argparse.Namespace, work: Path, out: Path, budget: Budget) -> None:
    """Export the uint8 model, then one probe per precision (and CUDA graphs) and the HTTP load."""
    import gpu_models

    base = work / "repo"
    try:
        exported = gpu_models.export_uint8(args.arch, base, args.max_batch_size)
    except Exception as err:  # an export that fails leaves nothing to measure; the report says why
        unmeasured(report, args, f"unmeasured: the export failed ({type(err).__name__}: {err})"[:300])
        return
    report.notes.append(f"{exported.name}: {exported.note}")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (args.parity_rows, *exported.input_size), dtype=np.uint8)
    np.save(work / "parity_in.npy", images if exported.datatype == "UINT8" else images.astype(np.float32))
    ref = gpu_models.reference(exported, images).astype(np.float64)
    for load in LOADS:
        gpu_models.variant(base, exported.name, load_repository(work, load.label), load.changes)
    for load in LOADS:
        if load.after_http and report.http is None:
            check_http(report, args, work, out, budget, exported)
        check_load(report, args, work, out, budget, exported.name, load, ref)
    if report.http is None:
        check_http(report, args, work, out, budget, exported)


def check_load(report: Report, args: argparse.Namespace, work: Path, out: Path, budget: Budget, model: str,
               load: Load, ref: npt.NDArray[np.float64]) -> None:  # fmt: skip
    """One probe: which provider ran, load time, GPU memory, parity with PyTorch, latency per bucket."""
    repository = load_repository(work, load.label)
    outputs = repository / "outputs.npy"
    outputs.unlink(missing_ok=True)
    extra = ["--inputs", str(work / "parity_in.npy"), "--outputs", str(outputs), "--latency", load.latency,
             "--max-runs", str(args.max_runs), "--max-s", str(args.max_s)]  # fmt: skip
    probe = Probe(load.label, model, load.providers, load.changes["precision"])
    result = run_probe(work, out, budget, probe, repository, extra, load.timeout_s)
    report.loads.append(probe)
    report.parity.append(parity_row(load.label, load.changes["precision"], result, outputs, ref))
    for row in result.get("latency", []):
        path = {"session.run": "session.run", "bound": "bound runner"}[row["path"]]
        if "graphs" in load.label:
            path = "cuda graphs"
        elif load.changes["precision"] == "fp16":
            path = f"bound runner ({SHORT.get(result.get('runs', ''), '?')}, fp16 asked)"
        report.latency.append(Latency(path, row["batch"], row["p50_ms"], row["p99_ms"], row["runs"]))
    report.write(out)


def check_http(report: Report, args: argparse.Namespace, work: Path, out: Path, budget: Budget, exported: Any) -> None:
    """images/s of a real server under the project's load harness, v2 binary tensors, ``--batch`` rows a request."""
    import gpu_http

    precision = args.http_precision
    requested = "tensorrt,cuda" if precision == "fp16" else "cuda"
    steps = len(args.http_concurrency.split(","))
    http = Http(exported.name, exported.datatype, args.batch, args.http_workers, requested, precision, [], "")
    report.http = http
    if args.skip_http:
        http.best_images_per_s = "skipped: --skip-http"
        return
    allowed = budget.allow(args.ready_timeout_s + steps * (args.http_duration_s + 20))
    if allowed < args.http_duration_s + 30:
        http.best_images_per_s = "skipped: time budget"
        return
    plan = gpu_http.HttpPlan(
        repository=load_repository(work, precision),
        model=exported.name,
        providers=requested,
        workers=args.http_workers,
        batch=args.batch,
        concurrency=args.http_concurrency,
        duration_s=args.http_duration_s,
        ready_timeout_s=args.ready_timeout_s,
        trt_cache=work / "trt_cache",
        require_gpu=report.mode == "gpu",
    )
    try:
        http.steps = gpu_http.run_load(plan, out, timeout_s=allowed)
        http.best_images_per_s = max((s.images_per_s for s in http.steps), default="unmeasured: no step")
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        http.best_images_per_s = f"unmeasured: {err}"[:300]
    report.write(out)


def load_repository(work: Path, label: str) -> Path:
    """The repository check_main_model built for the LOADS entry ``label``."""
    return work / re.sub(r"\W+", "_", label)


def unmeasured(report: Report, args: argparse.Namespace, why: str) -> None:
    """Placeholder rows: every GPU figure there would be, each saying why it was not measured."""
    from service.buckets import batch_buckets

    model = f"{args.arch}_u8"
    for load in LOADS:
        precision = load.changes["precision"]
        report.loads.append(
            Probe(load.label, model, load.providers, precision, runs=why, load_s=why, gpu_memory_mb=why)
        )
        report.parity.append(Parity(load.label, why, why, why, why, why))
    for path in ("session.run", "bound runner", "cuda graphs"):
        report.latency += [Latency(path, batch, why, why, 0) for batch in batch_buckets(args.max_batch_size)]
    steps = [HttpStep(int(c), why, why, why, 0, {}) for c in args.http_concurrency.split(",")]
    report.http = Http(model, "UINT8", args.batch, args.http_workers, "cuda", args.http_precision, steps, why)
    report.unmeasured = {key: why for key in ("loads", "parity", "latency", "http")}


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 once the report is written (what failed is a finding in it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO_ROOT / "reports" / "gpu"))
    parser.add_argument("--work", type=Path, default=REPO_ROOT / ".gpu-stage" / "work", help="models, engines")
    parser.add_argument("--budget-s", type=float, default=330, help="the whole check stops starting steps after it")
    parser.add_argument("--exercise-on-cpu", action="store_true", help="run the GPU plan even without a GPU")
    parser.add_argument("--arch", default="resnet50", help="zoo architecture of the main model")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--parity-rows", type=int, default=8)
    parser.add_argument("--max-runs", type=int, default=200, help="timed runs per batch bucket and path")
    parser.add_argument("--max-s", type=float, default=1.5, help="seconds per batch bucket and path")
    parser.add_argument("--batch", type=int, default=32, help="rows per HTTP request")
    parser.add_argument("--http-workers", type=int, default=1, help="1: the GPU overlay's CNNSERVE_WORKERS")
    parser.add_argument("--http-concurrency", default="1,8,32")
    parser.add_argument("--http-duration-s", type=float, default=10)
    parser.add_argument("--http-precision", default="fp32", choices=["fp32", "tf32", "fp16"])
    parser.add_argument("--ready-timeout-s", type=float, default=180)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    budget = Budget(args.budget_s)
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in ("tiny", "repo"):
        shutil.rmtree(args.work / stale, ignore_errors=True)
    report = Report(mode="cpu", started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    report.environment = environment(with_torch=False)
    check_providers(report, args.work, args.out, budget)
    cuda = next(p for p in report.providers if p.requested == "cuda")
    gpu_name = report.environment["nvidia_smi"][0] if report.environment["nvidia_smi"] else ""
    present = cuda.runs == "CUDAExecutionProvider"
    libs = cuda_libs.find()
    reason = "ONNX Runtime's CUDA provider runs" if present else (
        f"nvidia-smi sees {gpu_name} but ONNX Runtime's CUDA provider does not start: missing "
        f"{', '.join(libs.cuda_missing) or 'nothing found missing (see the probes/ logs)'}"
        if gpu_name else "no GPU visible (nvidia-smi absent or lists none)"
    )  # fmt: skip
    report.gpu = {"present": present, "name": gpu_name, "reason": reason}
    report.mode = "gpu" if present else "cpu-exercise" if args.exercise_on_cpu else "cpu"
    if report.mode == "cpu":
        unmeasured(report, args, NO_GPU)
    else:
        report.environment = {**environment(with_torch=True), "cuda_provider_runs": present}
        if report.mode == "cpu-exercise":
            report.notes.append("cpu-exercise: the GPU plan run on the CPU to test the harness; no figure is a GPU's")
        check_main_model(report, args, args.work, args.out, budget)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    report.duration_s = time.monotonic() - started
    report.write(args.out)
    print(f"gpu_check: mode {report.mode}, {report.duration_s:.0f} s; report in {args.out}/gpu_report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
