"""One model load the way the server loads it, in a process of its own; gpu_check.py runs one per configuration.

    python tests/gpu/gpu_probe.py --repository R --model M --providers cuda --result probe.json \
        [--inputs x.npy --outputs y.npy] [--latency session.run,bound] [--max-runs 200 --max-s 2]

A process per load gives each its own GPU memory figure and lets the parent bound it in time (a TensorRT engine
build cannot be interrupted otherwise) and capture what it prints: this script prints nothing on stdout itself, so
whatever appears there came from the service or from ONNX Runtime. Its findings go to ``--result`` as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: service/ is imported from there

from service.datatypes import V2_TO_NUMPY  # noqa: E402
from service.model_loader import ModelLoader  # noqa: E402
from service.runtime import ModelRunner  # noqa: E402
from service.settings import Settings  # noqa: E402

WARM_RUNS = 3


def gpu_memory_mb() -> dict[str, float]:
    """This process's GPU memory and the whole device's, in MiB, from nvidia-smi (empty without one)."""
    found: dict[str, float] = {}
    queries = {
        "process_mb": ["--query-compute-apps=pid,used_memory"],
        "device_used_mb": ["--query-gpu=index,memory.used", "-i", os.environ.get("GPU_CHECK_DEVICE", "0")],
    }
    for key, query in queries.items():
        try:
            text = subprocess.run(
                ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        for line in text.splitlines():
            first, _, value = (part.strip() for part in line.partition(","))
            if key == "device_used_mb" or first == str(os.getpid()):
                found[key] = float(value)
    return found


def timed(run: Callable[[], object], max_runs: int, max_s: float) -> list[float]:
    """Seconds of each run after ``WARM_RUNS`` unmeasured ones; stops at ``max_runs`` runs or ``max_s`` seconds."""
    for _ in range(WARM_RUNS):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + max_s
    while len(times) < max_runs and time.perf_counter() < deadline:
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def batch_of(config: Any, rows: int, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
    """Random inputs for ``rows`` rows of the model's tensors (uint8 pixels 0..255, floats standard normal)."""
    inputs = {}
    for spec in config.input:
        dtype = np.dtype(V2_TO_NUMPY[spec.datatype])
        shape = (rows, *spec.dims)
        if dtype == np.uint8:
            inputs[spec.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            inputs[spec.name] = rng.standard_normal(shape).astype(dtype)
    return inputs


def latencies(runner: ModelRunner, config: Any, paths: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """p50/p99 per batch bucket on each path: ``session.run`` (numpy in and out) or ``bound`` (the service's)."""
    rng = np.random.default_rng(0)
    session = runner.sessions[0]
    bound = runner if runner.iobinding else ModelRunner(runner.sessions, config, runner.device, iobinding=True)
    found = []
    for path in paths:
        for rows in runner.buckets:
            inputs = batch_of(config, rows, rng)
            run: Callable[[], object]
            if path == "session.run":
                run = functools.partial(session.run, None, inputs)
            else:
                run = functools.partial(bound, 0, inputs)
            times = timed(run, args.max_runs, args.max_s)
            p50, p99 = np.percentile(np.array(times) * 1e3, [50, 99])
            found.append({"path": path, "batch": rows, "p50_ms": float(p50), "p99_ms": float(p99), "runs": len(times)})
    return found


def main() -> int:
    """Load, report the provider, load time and memory, then the optional outputs and latencies."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--providers", required=True, help="CNNSERVE_PROVIDERS, e.g. tensorrt,cuda")
    parser.add_argument("--trt-cache", type=Path, help="CNNSERVE_TENSORRT_CACHE_PATH")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, help="a .npy batch to run once (parity)")
    parser.add_argument("--outputs", type=Path, help="where that batch's first output goes (.npy)")
    parser.add_argument("--latency", default="", help="comma-separated paths: session.run, bound")
    parser.add_argument("--max-runs", type=int, default=200)
    parser.add_argument("--max-s", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    result: dict[str, Any] = {"pid": os.getpid()}
    settings = Settings(
        repository_path=args.repository,
        models=(args.model,),
        providers=tuple(p for p in args.providers.split(",") if p),
        tensorrt_cache_path=args.trt_cache,
        workers=1,
    )
    started = time.perf_counter()
    try:
        loaded = ModelLoader(settings).load(args.model, None, 0)[0]
    except Exception as err:  # whatever stops the load is the finding
        result["error"] = f"{type(err).__name__}: {err}"
        args.result.write_text(json.dumps(result))
        return 0
    runner, config = loaded.runner, loaded.config
    result.update(
        load_s=time.perf_counter() - started,
        runs=runner.sessions[0].get_providers()[0],
        providers=runner.sessions[0].get_providers(),
        device=runner.device,
        buckets=list(runner.buckets),
        precision=getattr(config, "precision", "unknown"),
        **gpu_memory_mb(),
    )
    if args.inputs and args.outputs:
        x = np.load(args.inputs)
        np.save(args.outputs, next(iter(runner(0, {config.input[0].name: x}).values())))
    paths = [p for p in args.latency.split(",") if p]
    if paths:
        result["latency"] = latencies(runner, config, paths, args)
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
