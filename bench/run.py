"""``python -m bench --quick|--full``: the whole benchmark suite in one run; JSON, Markdown and PNG out.

Examples:
    python -m bench --quick                  # ~3 minutes (plus ~40 s the first time, exporting the models)
    python -m bench --full --pin             # ~13 minutes; load generator on the last CPU, servers on the rest
    python -m bench --quick --models lenet5_digits
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import TypeVar

from bench import client_cost, context, images, int8, machine, models, preprocess_bench, servers, side_by_side, suite
from bench.bars import summarise_bars
from bench.client_cost import ClientCost
from bench.preprocess_bench import PreprocessResult
from bench.report import markdown, plot_results
from bench.results import BenchResults, ModelResult, Pinning
from loadtest.http import Endpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
ALL_MODELS = ("lenet5_digits", "tiny_cnn", "resnet18")
Name = TypeVar("Name", bound=str)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short steps, ~3 minutes (the default)")
    size.add_argument("--full", action="store_true", help="longer steps and more thread settings, ~13 minutes")
    p.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated subset of " + ", ".join(ALL_MODELS))
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "bench", help="results and caches folder")
    p.add_argument(
        "--results-md",
        type=Path,
        help="where to copy the Markdown (default: bench/RESULTS.md, and only after a run of every model and server)",
    )
    p.add_argument(
        "--servers", default=",".join(context.SERVERS), help="comma-separated subset of " + ", ".join(context.SERVERS)
    )
    p.add_argument("--pin", action="store_true", help="load generator on the last CPU, servers and raw ORT on the rest")
    return p


def _cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    usable = sorted(os.sched_getaffinity(0))
    if not pin:
        return None, None
    if len(usable) < 2:
        raise SystemExit(f"--pin needs at least 2 usable CPUs, this process has {usable}")
    return set(usable[:-1]), {usable[-1]}


def _preprocess(ctx: context.Context) -> PreprocessResult:
    folder = images.image_folder(ctx.out, "resnet18")
    jpegs = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    result = preprocess_bench.measure(ctx.repository / "resnet18", jpegs, ctx.profile.preprocess_s)
    context.say(f"[preprocess] {result.images_per_cpu_s:,.0f} images per CPU-second, 224x224 JPEG")
    return result


def _client_cost(ctx: context.Context) -> ClientCost:
    server = servers.service(ctx.repository, "lenet5_digits", {}, ctx.out / "logs" / "client-cost.log", ctx.server_cpus)
    try:
        ctx.affinity(ctx.client_cpus)
        metadata = models.v2_metadata(ctx.repository, "lenet5_digits")
        endpoint = Endpoint.from_url(server.url)
        requests = ctx.profile.client_cost_requests
        result = client_cost.measure(endpoint, "lenet5_digits", metadata, requests, server.grpc_port)
    finally:
        server.stop()
    for name, run in result.clients.items():
        context.say(f"[client cost] {name:<30} {run.cpu_us_per_request:6.0f} us CPU per request")
    return result


def _int8(ctx: context.Context, chosen: tuple[str, ...]) -> tuple[int8.Int8Result, ...]:
    """FP32 against INT8 in raw ORT (bench.int8), on the servers' CPUs like the raw ORT measurements."""
    ctx.affinity(ctx.server_cpus)
    results = int8.measure_all(ctx.repository, ctx.out, chosen, ctx.profile.int8_runs)
    for r in results:
        context.say(
            f"[int8] {r.model}: INT8 {r.speed['int8_speedup']:.2f}x FP32's speed at batch {r.speed['batch']}, "
            f"{r.int8_bytes:,} vs {r.fp32_bytes:,} bytes, top-1 agreement {r.agreement:.2%} ({r.seconds:.0f} s)"
        )
    return results


def _bench_model(ctx: context.Context, model: str) -> ModelResult:
    """Every measurement of one model: raw ORT, each server's sweeps, then its comparisons in turns."""
    result = suite.bench_model(ctx, model)
    return dataclasses.replace(result, pairs=side_by_side.measure(ctx, model))


def _subset(p: argparse.ArgumentParser, text: str, allowed: tuple[Name, ...], what: str) -> tuple[Name, ...]:
    """The comma-separated names of ``text``, in the order given, each one of ``allowed``."""
    by_name: dict[str, Name] = {name: name for name in allowed}
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        p.error(f"unknown or no {what} {unknown}; choose from {', '.join(allowed)}")
    return tuple(by_name[name] for name in chosen)


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    profile = context.FULL if args.full else context.QUICK
    chosen = _subset(p, args.models, ALL_MODELS, "model(s)")
    kinds = _subset(p, args.servers, context.SERVERS, "server(s)")
    server_cpus, client_cpus = _cpus(args.pin)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    description = machine.describe()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    cpus, load = description.usable_cpus, description.load_average
    context.say(f"bench --{profile.name}: {description.cpu_model}, CPUs {cpus}, load average {load}")
    repository = models.ensure_repository(
        out / "models", tuple(dict.fromkeys(("resnet18", *chosen))), out / "export.log"
    )
    # The time budget starts after the (one-time) exports.
    ctx = context.Context(profile, out, repository, server_cpus, client_cpus, kinds)
    pinning = Pinning(sorted(server_cpus) if server_cpus else "all", sorted(client_cpus) if client_cpus else "all")
    preprocess = _preprocess(ctx)
    cost = _client_cost(ctx) if "lenet5_digits" in chosen else None
    measured = {model: _bench_model(ctx, model) for model in chosen}
    quantized = _int8(ctx, chosen)
    results = BenchResults(
        command="python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        profile=profile.name,
        started_at=started,
        machine=description,
        pinning=pinning,
        preprocess=preprocess,
        client_cost=cost,
        models=measured,
        skipped=ctx.skipped,
        elapsed_s=time.monotonic() - t0,
        bars=summarise_bars(measured, preprocess),
        int8=quantized,
    )
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=2) + "\n")
    text = markdown(results)
    (out / "results.md").write_text(text)
    complete = set(chosen) == set(ALL_MODELS) and set(kinds) == set(context.SERVERS) and not ctx.skipped
    copy = args.results_md or (REPO_ROOT / "bench" / "RESULTS.md" if complete else None)
    if copy is not None:
        copy.write_text(text)
    plot_results(results, out / "results.png")
    print(text)
    copied = f", and {copy}" if copy else " (a partial run: bench/RESULTS.md left as it was)"
    print(f"wrote results.json, .md and .png under {out}{copied}, in {results.elapsed_s:.0f} s")
    return 0
