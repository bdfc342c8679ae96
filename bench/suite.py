"""The benchmark matrix for one model: raw ORT, then each server (plain FastAPI, bare ASGI, the service) over
the tensor path and the image path at every concurrency, plus client-side batches of 32 for the small CNN, and
the service's v2 gRPC endpoint (unary and streaming) for LeNet-5 when it has one.

Every load step goes through the load harness (``loadtest.runner``) with the same client and the same payload
bytes for every server; a time budget skips what no longer fits, and says so in the results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnxruntime as ort

from bench import images, models, raw_ort, servers, turns
from bench.context import Context, say
from bench.kinds import GRPC_ROUTES, PEAK_ROUTES, ROUTE_NAMES, Route, ServerKind
from bench.results import ModelResult, ServerRuns, Turns
from loadtest.grpc_payloads import grpc_workload
from loadtest.grpc_target import GrpcTarget
from loadtest.http import Endpoint
from loadtest.payloads import Workload, load_images, rest_workload, v2_workload
from loadtest.results import StepReport, SweepReport
from loadtest.runner import Plan, run_sweep
from loadtest.transport import Transport

#: The small CNN's client-side batching check: rows per request, and the concurrencies tried.
CLIENT_BATCH = 32
CLIENT_BATCH_CONCURRENCY = (1, 4)
#: The model whose gRPC endpoint is measured beside HTTP v2 binary (the default model: the protocol's cost shows most).
GRPC_MODEL = "lenet5_digits"
#: The models whose bars divide the service's figures by raw ORT's: there the two are measured in turns.
TURNS_MODELS = ("resnet18",)
#: A server is not started with less of the time budget left than this (ResNet-18 alone warms up for ~12 s).
MIN_SERVER_S = 15.0


@dataclass(frozen=True)
class RouteLoad:
    """What one sweep sends, and where (None: HTTP to the server's URL)."""

    route: Route
    workload: Workload
    transport: Transport | None = None


def sweep(
    ctx: Context, server: servers.Server, model: str, route: RouteLoad, loads: tuple[int, ...], metrics: bool
) -> SweepReport:
    plan = Plan(
        Endpoint.from_url(server.url),
        model,
        route.workload,
        "closed",
        tuple(float(c) for c in loads),
        duration_s=ctx.profile.step_s,
        max_requests=200_000,
        warmup_s=ctx.profile.warmup_s,
        timeout_s=60.0,
        metrics_path="/metrics" if metrics else None,
        server_pid=server.process.pid,
        progress=False,
        transport=route.transport,
    )
    ctx.affinity(ctx.client_cpus)
    report = run_sweep(plan)
    for step in report.steps:
        p50_ms, p99_ms = (step.latency.p50_ms, step.latency.p99_ms) if step.latency else (0.0, 0.0)
        errors = f"  errors {step.errors}" if step.errors else ""
        say(
            f"  {server.name:<24} {ROUTE_NAMES[route.route]:<26} {step.load.label:<5} "
            f"{step.images_per_s:9,.1f} img/s  p50 {p50_ms:8.2f} ms  p99 "
            f"{p99_ms:8.2f} ms  gen CPU {step.generator.cpu_percent:3.0f}%{errors}"
        )
    return report


def one_step(ctx: Context, server: servers.Server, model: str, route: RouteLoad, users: int) -> StepReport:
    """One step of ``users`` closed-loop users, as the steps measured in turns are taken (no metrics scrape)."""
    return sweep(ctx, server, model, route, (users,), metrics=False).steps[0]


def start_server(ctx: Context, kind: ServerKind, model: str, tag: str = "") -> servers.Server:
    log = ctx.out / "logs" / f"{model}-{kind}{tag}.log"
    if kind == "baseline":
        return servers.baseline(ctx.repository / model, log, ctx.server_cpus)
    if kind == "bare":
        return servers.bare(ctx.repository / model, log, ctx.server_cpus)
    return servers.service(ctx.repository, model, {}, log, ctx.server_cpus)


def routes_of(ctx: Context, kind: ServerKind, server: servers.Server, model: str) -> dict[Route, RouteLoad]:
    endpoint = Endpoint.from_url(server.url)
    metadata = models.v2_metadata(ctx.repository, model)
    routes: dict[Route, RouteLoad] = {"tensor": RouteLoad("tensor", v2_workload(endpoint, model, metadata))}
    if kind == "bare":  # the reference for the tensor path only
        return routes
    routes["image"] = RouteLoad(
        "image", rest_workload(endpoint, model, load_images(images.image_folder(ctx.out, model)))
    )
    if model == "tiny_cnn":
        routes["tensor_batch32"] = RouteLoad(
            "tensor_batch32", v2_workload(endpoint, model, metadata, batch=CLIENT_BATCH)
        )
    if kind == "service" and model == GRPC_MODEL and server.grpc_port:  # 0: launched without a gRPC port
        for route in GRPC_ROUTES:
            target = GrpcTarget("127.0.0.1", server.grpc_port, streaming=route == "grpc_stream")
            routes[route] = RouteLoad(route, grpc_workload(model, metadata), target)
    return routes


def _turns(
    ctx: Context, server: servers.Server, model: str, sent: dict[Route, RouteLoad], sweeps: dict[Route, SweepReport],
    raw: raw_ort.RawOrt,
) -> Turns | None:  # fmt: skip
    """The service (fully loaded on each route, and at c=1) and raw ORT's best, in turns; None for a model not in
    ``TURNS_MODELS``, or when no round fitted the time budget."""
    if model not in TURNS_MODELS:
        return None
    concurrency = turns.full_load(sweeps)
    if concurrency is None:
        return None
    path, dims = models.model_file(ctx.repository, model), models.input_dims(ctx.repository, model)
    best, fastest = raw_ort.session(path, raw.best.setting), raw_ort.session(path, raw.batch1_setting)

    def raw_step(runner: ort.InferenceSession, batch: int) -> raw_ort.RawPoint:
        ctx.affinity(ctx.server_cpus)
        point = raw_ort.measure_point(runner, dims, batch, ctx.profile.step_s, ctx.profile.raw_min_runs)
        say(f"  raw ORT batch {batch:<3} {point.images_per_s:9,.1f} img/s  p50 {point.latency.p50_ms:8.2f} ms")
        return point

    def service_step(route: Route, users: int) -> StepReport:
        return one_step(ctx, server, model, sent[route], users)

    need = (len(PEAK_ROUTES) + 1) * ctx.profile.load_step_s + 4 * ctx.profile.step_s
    say(f"[{model}] the service and raw ONNX Runtime in turns")
    rounds = turns.take_turns(
        ctx.profile.turn_rounds,
        lambda: raw_step(best, raw.best_batch),
        lambda: raw_step(fastest, 1),
        service_step,
        concurrency,
        lambda: ctx.time_left() > need,
    )
    if len(rounds) < ctx.profile.turn_rounds:
        ctx.skipped.append(f"{model} turns: {len(rounds)} of {ctx.profile.turn_rounds} rounds fitted the time budget")
    if not rounds:
        return None
    return Turns(raw.best.setting.label, raw.best_batch, raw.batch1_setting.label, concurrency, rounds)


def bench_server(ctx: Context, kind: ServerKind, model: str, raw: raw_ort.RawOrt | None = None) -> ServerRuns | None:
    """Start one server, run its sweeps, stop it; None when the time budget left no room to start it.

    With ``raw``, the service of a model in ``TURNS_MODELS`` is also measured in turns with raw ORT."""
    if ctx.time_left() < MIN_SERVER_S:
        ctx.skipped.append(f"{model} {kind}: the time budget is spent ({ctx.time_left():.0f} s left)")
        return None
    server = start_server(ctx, kind, model)
    try:
        sweeps: dict[Route, SweepReport] = {}
        routes = routes_of(ctx, kind, server, model)
        for route, sent in routes.items():
            loads = CLIENT_BATCH_CONCURRENCY if route == "tensor_batch32" else ctx.profile.concurrency
            need = len(loads) * ctx.profile.load_step_s
            if ctx.time_left() < need:
                left = max(0.0, ctx.time_left())
                ctx.skipped.append(f"{model} {kind} {route}: {left:.0f} s left of the time budget, {need:.0f} s needed")
                continue
            sweeps[route] = sweep(ctx, server, model, sent, loads, metrics=kind == "service")
        memory = servers.memory_mib(server.process.pid)
        taken = _turns(ctx, server, model, routes, sweeps, raw) if kind == "service" and raw is not None else None
        return ServerRuns(sweeps, memory, taken)
    finally:
        stop_server(ctx, server, f"{model} {kind}")


def stop_server(ctx: Context, server: servers.Server, what: str) -> None:
    """Stop a server; one that did not exit cleanly is named under "Skipped", with its log."""
    code = server.stop()
    if code not in (0, -15):
        ctx.skipped.append(f"{what}: the server exited with {code}; see {server.log_path}")


def bench_model(ctx: Context, model: str) -> ModelResult:
    """Raw ORT, then every server kind, for one model."""
    say(f"[{model}] raw ONNX Runtime")
    ctx.affinity(ctx.server_cpus)
    cpus = len(ctx.server_cpus or os.sched_getaffinity(0))
    # One thread has no pool to spin, so spinning only varies for the multi-thread setting.
    settings = [raw_ort.ThreadSetting(1, True)] + [raw_ort.ThreadSetting(cpus, s) for s in (True, False) if cpus > 1]
    path, dims = models.model_file(ctx.repository, model), models.input_dims(ctx.repository, model)
    raw = raw_ort.measure_model(path, dims, settings, ctx.profile.raw_point_s, ctx.profile.raw_min_runs)
    say(
        f"  best {raw.best_images_per_s:,.1f} img/s at batch {raw.best_batch} ({raw.best.setting.label}); "
        f"batch 1: {raw.batch1_images_per_s:,.1f} img/s, p50 {raw.batch1_p50_ms:.2f} ms"
    )
    runs: dict[ServerKind, ServerRuns | None] = {}
    for kind in ctx.kinds:
        say(f"[{model}] {kind}")
        runs[kind] = bench_server(ctx, kind, model, raw)
    if ctx.time_left() > 0:
        ctx.affinity(ctx.server_cpus)
        raw = raw_ort.recheck(path, dims, raw, ctx.profile.raw_point_s, ctx.profile.raw_min_runs)
        say(f"[{model}] raw ONNX Runtime again: best {raw.best_images_per_s:,.1f} img/s (the higher of two runs)")
    else:
        ctx.skipped.append(f"{model} raw ONNX Runtime re-check: the time budget is spent")
    return ModelResult(raw, runs)
