"""A gRPC sweep as the runner and the CLI run it, against the fake v2 gRPC server: probe, processes, report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from fake_grpc_server import FakeGrpc, serve

from loadtest.cli import main
from loadtest.grpc_payloads import fetch_grpc_metadata, grpc_workload
from loadtest.grpc_target import GrpcTarget
from loadtest.http import Endpoint
from loadtest.results import ClosedLoad
from loadtest.runner import Plan, run_sweep_async

UNUSED_HTTP = Endpoint("127.0.0.1", 9)  # /metrics is not scraped here: the fake has no HTTP side


async def _plan(target: GrpcTarget, processes: int = 1) -> Plan:
    workload = grpc_workload("m", await fetch_grpc_metadata(target, "m"))
    return Plan(
        UNUSED_HTTP, "m", workload, "closed", (4,), duration_s=30.0, max_requests=200, warmup_s=0.0, timeout_s=30.0,
        metrics_path=None, progress=False, processes=processes, transport=target,
    )  # fmt: skip


async def test_a_sweep_shared_by_generator_processes_counts_every_stream() -> None:
    fake = FakeGrpc()
    async with serve(fake, streaming=True) as (target, _):
        report = await run_sweep_async(await _plan(target, processes=2))
    (step,) = report.steps
    assert report.target.url == target.url
    assert step.load == ClosedLoad(4)
    assert step.failure is None
    assert step.errors == {}
    assert 200 - 2 <= step.ok <= 200  # each process's cap is half the step's; the answers of both are pooled
    assert step.generator.connections == 4
    assert fake.streams == 4 + 1  # two users in each process, and the probe's


@pytest.mark.parametrize(
    ("knobs", "streaming", "reason"),
    [
        ({"status": grpc.StatusCode.NOT_FOUND}, False, "NOT_FOUND: told to fail"),
        ({"stream_error": "queue full"}, True, "queue full"),
    ],
)
async def test_the_probe_fails_fast_with_the_servers_reason(
    knobs: dict[str, Any], streaming: bool, reason: str
) -> None:
    async with serve(FakeGrpc(**knobs), streaming) as (target, _):
        with pytest.raises(RuntimeError, match=reason):
            await run_sweep_async(await _plan(target))


async def test_the_cli_runs_a_grpc_sweep_and_writes_its_report(tmp_path: Path) -> None:
    """``main`` runs its own event loop, in a thread, while this one serves the fake."""
    async with serve(FakeGrpc()) as (target, _):
        argv = [
            "--model", "m", "--target", "grpc", "--grpc-url", f"{target.host}:{target.port}", "--no-metrics",
            "--concurrency", "1,2", "--duration", "30", "--requests", "40", "--warmup", "0", "--quiet",
            "--json", str(tmp_path / "r.json"),
        ]  # fmt: skip
        assert await asyncio.to_thread(main, argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["target"]["url"] == target.url
    assert report["target"]["workload"] == "v2 gRPC raw tensors, 1 row(s)/request"
    assert [step["load"] for step in report["steps"]] == [{"concurrency": 1}, {"concurrency": 2}]
    assert all(step["errors"] == {} and step["ok"] >= 40 - 2 for step in report["steps"])
