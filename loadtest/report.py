"""Reports of a sweep: each step's summary (from the loop's raw result), the printed table, the JSON file.

The JSON report is the source of truth (``runner.run_sweep`` builds it from ``summarise``); the table is a view of
it, so a saved report prints again with ``python -m loadtest --show REPORT.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from loadtest.prom import ServerTiming, ServerView
from loadtest.results import GeneratorView, Latency, Load, OpenLoad, ServerProcess, StepReport, SweepReport
from loadtest.stats import LatencySummary
from loadtest.step_result import StepResult

#: Share of one core above which the generator, not the server, may be what limits a step.
GENERATOR_CPU_WARNING = 0.9
#: Mean open-loop send lag above which the schedule was not kept.
SEND_LAG_WARNING_S = 0.002
#: An open-loop step fails when it put fewer of its window's requests on the wire than the asked rate allows:
#: the expected count less this many standard deviations of a Poisson count, less one.
OFFERED_SIGMAS = 4.0


def _failure(load: Load, result: StepResult, max_connections: int) -> str | None:
    """Why the step did not measure the load asked for: a generator task that died, or a rate it could not offer.

    A generator must never report a load it did not send: the step is marked failed, and the run exits non-zero.
    """
    problems = list(result.failures)
    if isinstance(load, OpenLoad):
        expected = load.rate_per_s * result.window_s
        floor = expected - OFFERED_SIGMAS * math.sqrt(expected) - 1
        if result.sent < floor:
            problems.append(
                f"offered {result.sent / max(result.window_s, 1e-9):,.1f} req/s of the {load.rate_per_s:g} asked: "
                f"{result.sent:,} requests of the {result.window_s:.1f} s window went out, at least {floor:,.0f} "
                f"expected (the pool of {max_connections} connections was full and requests timed out waiting, "
                "the server stopped accepting, or the generator could not keep up)"
            )
    return "; ".join(problems) or None


def _warnings(
    load: Load, result: StepResult, cpu_fraction: float, lag_mean_s: float, max_connections: int
) -> list[str]:
    """Why the step's figures may not describe the server: a busy generator, a late schedule, no success."""
    warnings = []
    if cpu_fraction / result.processes >= GENERATOR_CPU_WARNING:
        cores = "a core" if result.processes == 1 else f"{result.processes} cores (one per generator process)"
        warnings.append(
            f"the load generator used {cpu_fraction:.0%} of {cores}: it, not the server, may be the bottleneck; "
            "run it on another machine, add --processes, or compare with a lower load"
        )
    if isinstance(load, OpenLoad) and lag_mean_s > SEND_LAG_WARNING_S:
        warnings.append(
            f"requests were sent {1e3 * lag_mean_s:.1f} ms after their scheduled time on average (max "
            f"{1e3 * result.lag_max_s:.1f} ms), waiting for a free or new connection (a saturated server accepts "
            f"slowly; the pool holds at most {max_connections}) or for a busy generator; latencies include "
            "that wait, as a user's would"
        )
    if result.ok == 0:
        warnings.append("no request succeeded in this step")
    return warnings


def failed_steps(report: SweepReport) -> list[StepReport]:
    """The steps that did not measure what was asked (``StepReport.failure``)."""
    return [step for step in report.steps if step.failure is not None]


def summarise(
    load: Load,
    result: StepResult,
    images_per_request: int,
    max_connections: int,
    server: ServerView | None = None,
    server_process: ServerProcess | None = None,
    server_problems: Sequence[str] = (),
) -> StepReport:
    """One step's report from the loop's raw result and what was learnt of the server around it.

    Args:
        load: The step's load level.
        result: What the loop recorded.
        images_per_request: Rows (images) each request carries, for images/s.
        max_connections: The open loop's pool bound, quoted when the schedule slipped.
        server: The server's view from /metrics, when scraped.
        server_process: The server process's CPU use, when it is local.
        server_problems: Why there is no server view (warnings after the generator's own).
    """
    latency = LatencySummary.of(result.latencies_s)
    window_s = max(result.window_s, 1e-9)  # a step whose generator failed before measuring has no window
    errors = {k: v for k, v in sorted(result.outcomes.items()) if not (k.isdigit() and 200 <= int(k) < 300)}
    cpu_fraction = result.cpu_s / result.span_s if result.span_s > 0 else 0.0
    lag_mean_s = result.lag_sum_s / result.sent if result.sent else 0.0
    return StepReport(
        load=load,
        requests=result.completed,
        ok=result.ok,
        errors=errors,
        window_s=result.window_s,
        span_s=result.span_s,
        throughput_rps=result.window_ok / window_s,
        images_per_s=result.window_ok * images_per_request / window_s,
        latency=Latency.of(latency) if latency else None,
        generator=GeneratorView(
            cpu_percent=100 * cpu_fraction,
            connections=result.connections,
            send_lag_mean_ms=1e3 * lag_mean_s,
            send_lag_max_ms=1e3 * result.lag_max_s,
            max_backlog=result.max_backlog,
        ),
        server=server,
        server_process=server_process,
        warnings=(*_warnings(load, result, cpu_fraction, lag_mean_s, max_connections), *server_problems),
        offered_rps=result.sent / window_s if isinstance(load, OpenLoad) else None,
        failure=_failure(load, result, max_connections),
    )


_COLUMNS = (
    ("load", "<"),
    ("offered/s", ">"),
    ("req/s", ">"),
    ("img/s", ">"),
    ("p50 ms", ">"),
    ("p90 ms", ">"),
    ("p99 ms", ">"),
    ("p99.9 ms", ">"),
    ("max ms", ">"),
    ("errors", "<"),
    ("srv batch", ">"),
    ("srv queue p50/p99 ms", ">"),
    ("srv compute p50/p99 ms", ">"),
    ("srv CPU", ">"),
    ("gen CPU", ">"),
)


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _pair(timing: ServerTiming | None) -> str:
    if timing is None:
        return "-"
    if timing.p50_ms is None or timing.p99_ms is None:
        return f"mean {_num(timing.mean_ms)}"
    return f"{_num(timing.p50_ms)}/{_num(timing.p99_ms)}"


def _row(step: StepReport) -> list[str]:
    latency = step.latency
    percentiles = (
        (latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.p999_ms, latency.max_ms) if latency else (None,) * 5
    )
    server = step.server
    errors = ", ".join(f"{k}: {v}" for k, v in step.errors.items()) or "0"
    return [
        step.load.label,
        _num(step.offered_rps, 1),
        _num(step.throughput_rps, 1),
        _num(step.images_per_s, 1),
        *(_num(value) for value in percentiles),
        errors,
        _num(server.mean_batch_size if server else None),
        _pair(server.queue_ms if server else None),
        _pair(server.compute_ms if server else None),
        "-" if step.server_process is None else f"{step.server_process.cpu_percent:.0f}%",
        f"{step.generator.cpu_percent:.0f}%",
    ]


def table(report: SweepReport) -> str:
    """The sweep as an aligned text table, headed by the target and followed by every step's warnings."""
    target = report.target
    rows = [[name for name, _ in _COLUMNS], *(_row(step) for step in report.steps)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [f"{target.url}  model {target.model}  {target.workload}"]
    for row in rows:
        cells = [f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, _COLUMNS, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    for step in report.steps:
        lines += [f"warning ({step.load.label}): {warning}" for warning in step.warnings]
    lines += [f"FAILED ({step.load.label}): {step.failure}" for step in failed_steps(report)]
    return "\n".join(lines)


def write_json(report: SweepReport, path: Path) -> None:
    """Write the report (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")


def read_json(path: Path) -> SweepReport:
    """Read a report written by ``write_json``.

    Raises:
        ValueError: the file is not a loadtest report.
    """
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "steps" not in data or "target" not in data:
        raise ValueError(f"{path} is not a loadtest JSON report (no 'steps' and 'target')")
    try:
        return SweepReport.from_dict(data)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a loadtest JSON report as this version writes it: {err!r}") from err
