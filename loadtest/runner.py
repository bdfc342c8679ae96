"""Runs a sweep: for each load level, warm up, scrape /metrics, measure, drain, scrape again, summarise.

``run_sweep(plan)`` is the harness as a library (the CLI and the benchmark suite call it); it returns the sweep's
``SweepReport``. A live progress line goes to stderr while a step runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

import uvloop

from loadtest import __version__
from loadtest.http import Endpoint, get
from loadtest.load_loop import LoadLoop
from loadtest.payloads import Workload
from loadtest.processes import Share, Step, run_shared, shares, start_loop
from loadtest.prom import ServerView, Snapshot, parse, server_view
from loadtest.report import summarise
from loadtest.results import Arrival, ClosedLoad, Load, OpenLoad, ServerProcess, StepReport, SweepReport, Target
from loadtest.step_result import StepResult
from loadtest.transport import Transport

#: Open-loop connection pool bound: below a default cnnserve process's connection limit (CNNSERVE_MAX_CONNECTIONS,
#: 1000), so the harness measures the server's answers, not its refusals of connections past that limit.
DEFAULT_MAX_CONNECTIONS = 512


@dataclass(frozen=True)
class Plan:
    """Everything one sweep needs. ``loads`` are concurrencies (closed loop) or requests/s (open loop).

    ``endpoint`` is the HTTP server, scraped for /metrics; the load goes there too unless ``transport`` says
    otherwise (a ``loadtest.grpc_target.GrpcTarget``: the same server's gRPC port).
    """

    endpoint: Endpoint
    model: str
    workload: Workload
    mode: Literal["closed", "open"]
    loads: tuple[float, ...]
    arrival: Arrival = "poisson"
    duration_s: float = 10.0
    max_requests: int = 100_000
    warmup_s: float = 1.0
    timeout_s: float = 30.0
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    metrics_path: str | None = "/metrics"
    server_pid: int | None = None
    seed: int = 0
    progress: bool = True
    processes: int = 1  # generator processes sharing each step (``loadtest.processes``)
    transport: Transport | None = None

    @property
    def target(self) -> Transport:
        """Where the load goes: ``transport``, or the HTTP ``endpoint``."""
        return self.transport or self.endpoint


async def _scrape(plan: Plan) -> tuple[Snapshot | None, str | None]:
    if plan.metrics_path is None:
        return None, None
    try:
        status, body = await get(plan.endpoint, plan.metrics_path, plan.timeout_s)
        if status != 200:
            return None, f"GET {plan.metrics_path} answered {status}"
        return parse(body.decode(), plan.model), None
    except (OSError, ValueError) as err:
        return None, f"GET {plan.metrics_path} failed: {err}"


def _server_cpu_s(pid: int | None) -> float | None:
    """CPU seconds of the server process and its children (uvicorn workers), or None when not local/known."""
    if pid is None:
        return None
    import psutil

    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total
    except psutil.NoSuchProcess:
        return None


async def _progress(driver: LoadLoop, label: str) -> None:
    """A live status line on stderr (rewritten in place on a terminal, one line per 5 s otherwise)."""
    tty = sys.stderr.isatty()
    period = 0.5 if tty else 5.0
    started = time.perf_counter()
    while True:
        await asyncio.sleep(period)
        result = driver.result
        elapsed = time.perf_counter() - started
        phase = "warm-up" if driver.measure_from > time.perf_counter() else "measuring"
        rate = result.ok / max(time.perf_counter() - driver.measure_from, 1e-9) if phase == "measuring" else 0.0
        line = (
            f"[{label}] {phase} {elapsed:5.1f}s  ok {result.ok:,}  errors {result.completed - result.ok:,}  "
            f"{rate:,.0f} req/s  in flight {driver.inflight}"
        )
        sys.stderr.write(f"\r{line:<100}" if tty else line + "\n")
        sys.stderr.flush()


def _load(plan: Plan, level: float) -> Load:
    """The plan's load level as the report names it.

    Raises:
        ValueError: a closed-loop level that is not a whole number of users.
    """
    if plan.mode == "open":
        return OpenLoad(level, plan.arrival)
    if level < 1 or level != int(level):
        raise ValueError(f"concurrency {level} is not a whole number >= 1")
    return ClosedLoad(int(level))


def _label(load: Load) -> str:
    if isinstance(load, ClosedLoad):
        return f"concurrency {load.concurrency}"
    return f"{load.rate_per_s:g} req/s {load.arrival}"


def _step(plan: Plan) -> Step:
    """What every generator process of a step shares, from the plan."""
    return Step(plan.target, plan.workload, plan.timeout_s, plan.warmup_s, plan.duration_s)


def _server(
    before: Snapshot | None, after: Snapshot | None, problem: str | None
) -> tuple[ServerView | None, list[str]]:
    """The server's view between two scrapes, or why there is none."""
    if before is not None and after is not None:
        try:
            return server_view(before, after), []
        except ValueError as err:
            return None, [str(err)]
    return None, [f"no server-side view: {problem}"] if problem else []


@dataclass
class _Bracket:
    """What is read of the server just before a step's window opens and just after its requests are answered."""

    before: Snapshot | None = None
    after: Snapshot | None = None
    problem: str | None = None
    cpu_before: float | None = None
    cpu_after: float | None = None

    async def open(self, plan: Plan) -> None:
        self.before, self.problem = await _scrape(plan)
        self.cpu_before = _server_cpu_s(plan.server_pid)

    async def close(self, plan: Plan) -> None:
        self.cpu_after = _server_cpu_s(plan.server_pid)
        self.after, problem = await _scrape(plan)
        self.problem = self.problem or problem


async def _measure_here(plan: Plan, load: Load, bracket: _Bracket) -> StepResult:
    """The step in this process: warm up, open the bracket, measure, drain, close it."""
    driver, answers = await start_loop(_step(plan), Share(load, plan.max_connections, plan.max_requests, plan.seed))
    ticker = asyncio.get_running_loop().create_task(_progress(driver, _label(load))) if plan.progress else None
    try:
        await driver.warm_up(plan.warmup_s, answers)
        await bracket.open(plan)
        driver.measure(plan.duration_s, plan.max_requests, answers)
        result = await driver.finish()
        await bracket.close(plan)
    finally:
        if ticker is not None:
            ticker.cancel()
            sys.stderr.write("\n" if sys.stderr.isatty() else "")
    return result


async def run_step(plan: Plan, level: float) -> StepReport:
    """Warm up, measure one load level within the plan's bounds, and report it with the server's view."""
    load = _load(plan, level)
    bracket = _Bracket()
    if plan.processes > 1:
        parts = shares(load, plan.processes, plan.max_connections, plan.max_requests, plan.seed)
        if plan.progress:
            sys.stderr.write(f"[{_label(load)}] {len(parts)} generator processes, {plan.duration_s:g} s\n")
        result = await run_shared(_step(plan), parts, lambda: bracket.open(plan), lambda: bracket.close(plan))
    else:
        result = await _measure_here(plan, load, bracket)
    server, problems = _server(bracket.before, bracket.after, bracket.problem)
    process = None
    if bracket.cpu_before is not None and bracket.cpu_after is not None:
        process = ServerProcess(plan.server_pid, 100 * (bracket.cpu_after - bracket.cpu_before) / result.span_s)
    images = plan.workload.images_per_request
    return summarise(load, result, images, plan.max_connections, server, process, problems)


async def run_sweep_async(plan: Plan) -> SweepReport:
    """Probe once (see ``Transport.probe``), then run every load level in order; returns the sweep's report."""
    await plan.target.probe(plan.workload.requests[0], plan.timeout_s)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    steps = tuple([await run_step(plan, level) for level in plan.loads])
    left_out = ("endpoint", "transport", "workload", "loads", "progress")
    settings = {k: v for k, v in asdict(plan).items() if k not in left_out}
    target = Target(
        url=plan.target.url,
        model=plan.model,
        workload=plan.workload.description,
        images_per_request=plan.workload.images_per_request,
        body_bytes=plan.workload.body_bytes,
    )
    return SweepReport("cnnserve loadtest", __version__, started, target, settings, steps)


def run_sweep(plan: Plan) -> SweepReport:
    """``run_sweep_async`` on a fresh uvloop event loop."""
    return uvloop.run(run_sweep_async(plan))
