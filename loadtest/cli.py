"""``python -m loadtest``: parse flags, build the workload, run the sweep, print the table, write JSON and PNG.

Examples:
    python -m loadtest --model lenet5_digits --concurrency 1,4,16,64 --duration 10
    python -m loadtest --target rest --images samples/digits --rate 100,200,400 --json out/report.json
    python -m loadtest --target grpc-stream --grpc-url 127.0.0.1:8001 --concurrency 1,16 --processes 2
    python -m loadtest --show out/report.json --plot out/report.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvloop

from loadtest.grpc_payloads import fetch_grpc_metadata, grpc_workload
from loadtest.grpc_target import OPEN_LOOP_LANES_PER_CHANNEL, GrpcTarget
from loadtest.http import Endpoint, wait_ready
from loadtest.payloads import Workload, fetch_metadata, generate_images, load_images, rest_workload, v2_workload
from loadtest.plot import plot
from loadtest.report import failed_steps, read_json, table, write_json
from loadtest.results import SweepReport
from loadtest.runner import DEFAULT_MAX_CONNECTIONS, Plan, run_sweep_async
from loadtest.transport import Transport

TOKEN_ENV = "LOADTEST_TOKEN"
GRPC_TARGETS = ("grpc", "grpc-stream")
#: cnnserve's (and Triton's) default gRPC port (``--grpc-port``, CNNSERVE_GRPC_PORT).
DEFAULT_GRPC_PORT = 8001


def _numbers(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more numbers > 0, e.g. 1,4,16,64")
    return values


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) < 1 or int(height) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 224x224")
    return int(width), int(height)


def parser() -> argparse.ArgumentParser:
    """The command line (also rendered by ``--help``)."""
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Load-test a cnnserve (or any KServe v2) deployment over HTTP or gRPC: closed-loop concurrency "
        "sweeps or open-loop arrival rates without coordinated omission; prints a latency/throughput table with the "
        "server's own view from /metrics, and writes JSON and PNG reports.",
    )
    target = p.add_argument_group("target")
    target.add_argument(
        "--url", default="http://127.0.0.1:8000", help="server as http(s)://host:port (default http://127.0.0.1:8000)"
    )
    target.add_argument(
        "--model", default="lenet5_digits", help="model name (default lenet5_digits, the built-in model)"
    )
    target.add_argument(
        "--target",
        choices=["v2", "v2-json", "rest", *GRPC_TARGETS],
        default="v2",
        help="v2 (default): /v2/models/M/infer with binary tensors; v2-json: JSON tensors; rest: "
        "/v1/models/M/classify; grpc: KServe v2 gRPC ModelInfer (unary) with raw tensors, one call in flight per "
        "channel; grpc-stream: ModelStreamInfer, one bidirectional stream per channel with one request in flight on "
        "it. A gRPC user (or open-loop pool slot) is one channel, as an HTTP one is one keep-alive connection; "
        "/metrics still comes from --url",
    )
    target.add_argument(
        "--grpc-url",
        help=f"grpc targets: the gRPC endpoint as host:port (default: --url's host, port {DEFAULT_GRPC_PORT})",
    )
    target.add_argument("--token", help=f"bearer token (or set {TOKEN_ENV})")
    target.add_argument("--wait-s", type=float, default=0.0, help="first wait up to this long for readiness")
    target.add_argument("--batch", type=int, default=1, help="v2, grpc: rows (images) per request (default 1)")
    target.add_argument("--images", type=Path, help="rest: folder of image files sent in turn")
    target.add_argument("--generate", type=_size, help="rest: generate images of WIDTHxHEIGHT (default: model input)")
    target.add_argument(
        "--image-format", choices=["jpeg", "png"], default="jpeg", help="format of generated images (default jpeg)"
    )
    target.add_argument("--top-k", type=int, default=5, help="rest: labels per image (default 5)")
    load = p.add_argument_group("load", "One sweep: several concurrencies (closed loop) or rates (open loop).")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=_numbers, help="closed loop: users in flight, e.g. 1,4,16,64 (default)")
    mode.add_argument("--rate", type=_numbers, help="open loop: requests/s, e.g. 100,200,400")
    load.add_argument(
        "--arrival",
        choices=["poisson", "constant"],
        default="poisson",
        help="open-loop gaps: exponential (default) or equal",
    )
    load.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"open loop: connection pool bound (default {DEFAULT_MAX_CONNECTIONS}). Over gRPC each connection is a "
        "channel of its own, far costlier to open than an HTTP connection for client and server alike: once requests "
        "queue, the pool grows toward the bound and opening channels shows in the latency; a bound of a few dozen "
        "keeps it to few channels",
    )
    load.add_argument(
        "--processes",
        type=int,
        default=1,
        help="generator processes sharing each step's load (users, rate, pool and request cap), merged into one "
        "report: for a server one core of load generation cannot saturate (default 1)",
    )
    bounds = p.add_argument_group(
        "bounds",
        "Per step; whichever comes first ends it. A closed-loop warm-up also lasts until every user has had an "
        "answer, and its window until as many answers as users arrived in it, each at most --timeout longer, so a "
        "step never exceeds warm-up + duration + 2 x timeout.",
    )
    bounds.add_argument("--duration", type=float, default=10.0, help="measured seconds per step (default 10)")
    bounds.add_argument(
        "--requests", type=int, default=100_000, help="measured requests per step, a hard cap (default 100000)"
    )
    bounds.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load discarded before measuring (default 1)"
    )
    bounds.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before a request counts as timed out (default 30)"
    )
    server = p.add_argument_group("server-side view")
    server.add_argument(
        "--metrics-path", default="/metrics", help="Prometheus endpoint scraped around each step (default /metrics)"
    )
    server.add_argument("--no-metrics", action="store_true", help="do not scrape /metrics")
    server.add_argument("--server-pid", type=int, help="a local server's PID: report its CPU use too")
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, help="write the JSON report here")
    out.add_argument("--plot", type=Path, help="write the PNG plot here")
    out.add_argument("--show", type=Path, help="print (and --plot) a saved JSON report instead of running")
    out.add_argument("--quiet", action="store_true", help="no live progress line")
    out.add_argument("--seed", type=int, default=0, help="seed of tensors, images and Poisson gaps (default 0)")
    return p


def grpc_target(args: argparse.Namespace, endpoint: Endpoint) -> GrpcTarget | None:
    """The gRPC endpoint a ``grpc*`` target loads (None for the HTTP targets)."""
    if args.target not in GRPC_TARGETS:
        return None
    address = args.grpc_url or f"{endpoint.host}:{DEFAULT_GRPC_PORT}"
    shared = OPEN_LOOP_LANES_PER_CHANNEL if args.rate is not None else 1  # HTTP/2 multiplexes the open loop's pool
    return GrpcTarget.from_address(address, args.target == "grpc-stream", endpoint.token, shared)


async def build_workload(args: argparse.Namespace, endpoint: Endpoint, grpc: GrpcTarget | None = None) -> Workload:
    """The requests the sweep cycles through, from the flags and (for tensors) the model's v2 metadata (over gRPC
    for ``grpc``)."""
    if grpc is not None:
        metadata = await fetch_grpc_metadata(grpc, args.model, args.timeout)
        return grpc_workload(args.model, metadata, batch=args.batch, seed=args.seed)
    if args.target in ("v2", "v2-json"):
        metadata = await fetch_metadata(endpoint, args.model, args.timeout)
        return v2_workload(endpoint, args.model, metadata, batch=args.batch, binary=args.target == "v2", seed=args.seed)
    if args.images is not None:
        images = load_images(args.images)
    else:
        width, height = args.generate or (0, 0)
        if args.generate is None:
            height, width = (await fetch_metadata(endpoint, args.model, args.timeout))["inputs"][0]["shape"][-2:]
        images = generate_images(width, height, fmt=args.image_format, seed=args.seed)
    return rest_workload(endpoint, args.model, images, args.top_k)


def _plan(args: argparse.Namespace, endpoint: Endpoint, workload: Workload, transport: Transport | None) -> Plan:
    closed = args.rate is None
    return Plan(
        endpoint=endpoint,
        model=args.model,
        workload=workload,
        mode="closed" if closed else "open",
        loads=(args.concurrency or (1, 4, 16, 64)) if closed else args.rate,
        arrival=args.arrival,
        duration_s=args.duration,
        max_requests=args.requests,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        max_connections=args.max_connections,
        metrics_path=None if args.no_metrics else args.metrics_path,
        server_pid=args.server_pid,
        seed=args.seed,
        progress=not args.quiet,
        processes=args.processes,
        transport=transport,
    )


async def _run(args: argparse.Namespace) -> SweepReport:
    endpoint = Endpoint.from_url(args.url, args.token or os.environ.get(TOKEN_ENV))
    if args.wait_s > 0:  # a server started beside the generator (compose) may still be loading its models
        await wait_ready(endpoint, args.wait_s)
    grpc = grpc_target(args, endpoint)
    workload = await build_workload(args, endpoint, grpc)
    return await run_sweep_async(_plan(args, endpoint, workload, grpc))


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    problems = [
        (args.duration <= 0, f"--duration is {args.duration}, expected > 0 seconds"),
        (args.requests < 1, f"--requests is {args.requests}, expected >= 1"),
        (args.warmup < 0, f"--warmup is {args.warmup}, expected >= 0 seconds"),
        (args.timeout <= 0, f"--timeout is {args.timeout}, expected > 0 seconds"),
        (args.batch < 1, f"--batch is {args.batch}, expected >= 1 rows"),
        (args.max_connections < 1, f"--max-connections is {args.max_connections}, expected >= 1"),
        (args.processes < 1, f"--processes is {args.processes}, expected >= 1"),
        (bool(args.concurrency) and any(c != int(c) for c in args.concurrency), "--concurrency takes whole numbers"),
        (args.target != "rest" and (args.images or args.generate), "--images/--generate apply to --target rest"),
        (args.grpc_url is not None and args.target not in GRPC_TARGETS, "--grpc-url applies to the grpc targets"),
    ]
    for failed, message in problems:
        if failed:
            p.error(message)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 done, 1 the target failed, 2 bad flags, 3 a step did not offer the
    load asked for: the report is still printed and written, with the reason)."""
    p = parser()
    args = p.parse_args(argv)
    if args.show is not None:
        report = read_json(args.show)
    else:
        _check(p, args)
        try:
            report = uvloop.run(_run(args))
        except (TimeoutError, OSError, RuntimeError, ValueError) as err:
            print(f"loadtest: {err}", file=sys.stderr)
            return 1
    print(table(report))
    if args.json is not None and args.show is None:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 3 if failed_steps(report) else 0
