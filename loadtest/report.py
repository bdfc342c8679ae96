"""Reports of a sweep: each step's entry (from the generator's raw result), the printed table, the JSON file.

The JSON report is the source of truth (``runner.run_sweep`` builds it from ``summarise``); the table is a view of
it, so a saved report prints again with ``python -m loadtest --show REPORT.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.generators import StepResult
from loadtest.stats import LatencySummary

if TYPE_CHECKING:  # runner imports this module
    from loadtest.runner import Plan

#: Share of one core above which the generator, not the server, may be what limits a step.
GENERATOR_CPU_WARNING = 0.9
#: Mean open-loop send lag above which the schedule was not kept.
SEND_LAG_WARNING_S = 0.002


def summarise(plan: Plan, load: float, result: StepResult) -> dict[str, Any]:
    """One step's report entry from its raw result (server fields are added by the caller)."""
    latency = LatencySummary.of(result.latencies_s)
    errors = {k: v for k, v in sorted(result.outcomes.items()) if not (k.isdigit() and 200 <= int(k) < 300)}
    cpu_fraction = result.cpu_s / result.span_s if result.span_s > 0 else 0.0
    lag_mean = result.lag_sum_s / result.sent if result.sent else 0.0
    warnings = []
    if cpu_fraction >= GENERATOR_CPU_WARNING:
        warnings.append(
            f"the load generator used {cpu_fraction:.0%} of a core: it, not the server, may be the bottleneck; "
            "run it on another machine, or compare with a lower load"
        )
    if plan.mode == "open" and lag_mean > SEND_LAG_WARNING_S:
        warnings.append(
            f"requests were sent {1e3 * lag_mean:.1f} ms after their scheduled time on average (max "
            f"{1e3 * result.lag_max_s:.1f} ms), waiting for a free or new connection (a saturated server accepts "
            f"slowly; the pool holds at most {plan.max_connections}) or for a busy generator; latencies include "
            "that wait, as a user's would"
        )
    if result.ok == 0:
        warnings.append("no request succeeded in this step")
    load_info: dict[str, Any] = (
        {"concurrency": int(load)} if plan.mode == "closed" else {"rate_per_s": load, "arrival": plan.arrival}
    )
    return {
        "load": load_info,
        "requests": result.completed,
        "ok": result.ok,
        "errors": errors,
        "window_s": result.window_s,
        "span_s": result.span_s,
        "throughput_rps": result.window_ok / result.window_s,
        "images_per_s": result.window_ok * plan.workload.images_per_request / result.window_s,
        "latency_ms": latency.to_ms() if latency else None,
        "generator": {
            "cpu_percent": 100 * cpu_fraction,
            "connections": result.connections,
            "send_lag_ms": {"mean": 1e3 * lag_mean, "max": 1e3 * result.lag_max_s},
            "max_backlog": result.max_backlog,
        },
        "server": None,
        "server_process": None,
        "warnings": warnings,
    }


_COLUMNS = (
    ("load", "<"),
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
    ("gen CPU", ">"),
)


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _pair(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    if "p50" not in summary:
        return f"mean {_num(summary.get('mean'))}"
    return f"{_num(summary['p50'])}/{_num(summary['p99'])}"


def load_label(step: dict[str, Any]) -> str:
    """``c=16`` for a closed-loop step, ``500/s poisson`` for an open-loop one."""
    load = step["load"]
    if "concurrency" in load:
        return f"c={load['concurrency']}"
    return f"{load['rate_per_s']:g}/s {load['arrival']}"


def _row(step: dict[str, Any]) -> list[str]:
    latency = step["latency_ms"] or {}
    server = step["server"] or {}
    errors = ", ".join(f"{k}: {v}" for k, v in step["errors"].items()) or "0"
    return [
        load_label(step),
        _num(step["throughput_rps"], 1),
        _num(step["images_per_s"], 1),
        *(_num(latency.get(key)) for key in ("p50", "p90", "p99", "p99.9", "max")),
        errors,
        _num(server.get("mean_batch_size")),
        _pair(server.get("queue_ms")),
        _pair(server.get("compute_ms")),
        f"{step['generator']['cpu_percent']:.0f}%",
    ]


def table(report: dict[str, Any]) -> str:
    """The sweep as an aligned text table, headed by the target and followed by every step's warnings."""
    target = report["target"]
    rows = [[name for name, _ in _COLUMNS], *(_row(step) for step in report["steps"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [f"{target['url']}  model {target['model']}  {target['workload']}"]
    for row in rows:
        cells = [f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, _COLUMNS, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    for step in report["steps"]:
        lines += [f"warning ({load_label(step)}): {warning}" for warning in step["warnings"]]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """Read a report written by ``write_json``.

    Raises:
        ValueError: the file is not a loadtest report.
    """
    report = json.loads(path.read_text())
    if not isinstance(report, dict) or "steps" not in report or "target" not in report:
        raise ValueError(f"{path} is not a loadtest JSON report (no 'steps' and 'target')")
    return report
