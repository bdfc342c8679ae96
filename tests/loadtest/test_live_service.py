"""The harness against a real ``python -m service`` serving the committed default model (a few seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import servers
from loadtest.grpc_payloads import grpc_workload
from loadtest.grpc_target import GrpcTarget
from loadtest.http import Endpoint
from loadtest.payloads import v2_workload
from loadtest.results import ClosedLoad, SweepReport
from loadtest.runner import Plan, run_sweep

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "lenet5_digits"
METADATA = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 32, 32]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """``python -m service`` on the repository's own models/, on free ports; stopped by PID."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    server = servers.service(REPO_ROOT / "models", MODEL, {}, log, cpus=None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(live: servers.Server) -> tuple[str, int]:
    """The live service's HTTP URL and PID."""
    return live.url, live.process.pid


@pytest.fixture(scope="module")
def grpc_port(live: servers.Server) -> int:
    """The live service's gRPC port; the tests skip where the launcher gives the service none."""
    port = getattr(live, "grpc_port", 0)
    if not port:
        pytest.skip("bench.servers.Server has no grpc_port: the service's gRPC endpoint is not launched")
    return int(port)


def _plan(
    service: tuple[str, int],
    concurrencies: tuple[int, ...],
    max_requests: int,
    processes: int = 1,
    grpc: GrpcTarget | None = None,
) -> Plan:
    """A short closed-loop sweep of v2 binary tensors (over gRPC with ``grpc``) against the live service, reading
    its CPU and /metrics too."""
    url, pid = service
    endpoint = Endpoint.from_url(url)
    workload = v2_workload(endpoint, MODEL, METADATA) if grpc is None else grpc_workload(MODEL, METADATA)
    return Plan(
        endpoint, MODEL, workload, "closed", concurrencies, duration_s=1.0, max_requests=max_requests, warmup_s=0.3,
        timeout_s=10.0, server_pid=pid, progress=False, processes=processes, transport=grpc,
    )  # fmt: skip


def test_closed_loop_sweep_reports_client_and_server_views(service: tuple[str, int]) -> None:
    _assert_client_and_server_views(run_sweep(_plan(service, (1, 8), max_requests=2_000)))


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
def test_grpc_sweep_reports_client_and_server_views(service: tuple[str, int], grpc_port: int, streaming: bool) -> None:
    grpc = GrpcTarget("127.0.0.1", grpc_port, streaming)
    report = run_sweep(_plan(service, (1, 8), max_requests=2_000, grpc=grpc))
    assert report.target.url == grpc.url
    _assert_client_and_server_views(report)


def _assert_client_and_server_views(report: SweepReport) -> None:
    """A sweep at concurrencies 1 and 8 that the server answered without error, as the client and /metrics see it."""
    assert [s.load for s in report.steps] == [ClosedLoad(1), ClosedLoad(8)]
    for step in report.steps:
        assert step.errors == {}, step
        assert step.throughput_rps > 0
        assert 0 < step.ok <= 2_000
        assert step.latency is not None
        assert 0 < step.latency.p50_ms <= step.latency.p99_ms <= step.latency.max_ms
        server = step.server
        assert server is not None
        assert server.source == "cnnserve histograms"
        assert server.mean_batch_size is not None
        assert server.mean_batch_size >= 1.0
        # Every request the client saw answered inside the window was counted by the server between the two scrapes,
        # except at most one per user answered by the server just before the first scrape. The server also counts
        # what finished while the first scrape travelled back (its length depends on the machine's load) and the
        # drain after the window, so above the client's count there is only a sanity bound.
        users = int(step.load.level)
        assert step.ok - users <= server.requests <= 3 * step.ok + users, (server.requests, step.ok)
        assert server.compute_ms is not None
        assert server.compute_ms.p50_ms is not None
        assert server.compute_ms.p50_ms > 0
        assert step.server_process is not None
        assert step.server_process.cpu_percent > 0
    first = report.steps[0].server
    assert first is not None
    assert first.mean_batch_size == pytest.approx(1.0)  # one user: nothing to batch


def test_several_generator_processes_report_one_step_the_server_agrees_with(service: tuple[str, int]) -> None:
    (step,) = run_sweep(_plan(service, (6,), max_requests=3_000, processes=2)).steps
    assert step.errors == {}, step
    assert step.failure is None
    assert 0 < step.ok <= 3_000
    assert step.generator.connections == 6  # 3 users in each process, one connection each
    server = step.server
    assert server is not None
    # As in the one-process test: both processes' windows lie between the two scrapes, so the server counted at
    # least what the client saw answered in them, less one answer per user at the edge.
    assert step.ok - 6 <= server.requests <= 3 * step.ok + 6, (server.requests, step.ok)


def test_cli_rest_target_writes_the_json_report(service: tuple[str, int], tmp_path: Path) -> None:
    url, _ = service
    command = [
        sys.executable, "-m", "loadtest", "--url", url, "--model", MODEL, "--target", "rest",
        "--images", str(REPO_ROOT / "samples" / "digits"), "--rate", "100", "--duration", "1", "--warmup", "0.2",
        "--requests", "500", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    (step,) = report["steps"]
    assert step["load"] == {"rate_per_s": 100.0, "arrival": "poisson"}
    assert step["errors"] == {}
    assert 50 <= step["ok"] <= 160  # Poisson(100) over 1 s
    assert step["server"]["preprocess_ms"]["p50"] > 0  # images were decoded server-side
    assert "100/s poisson" in done.stdout
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_cli_grpc_stream_target_writes_the_json_report(
    service: tuple[str, int], grpc_port: int, tmp_path: Path
) -> None:
    url, _ = service
    command = [
        sys.executable, "-m", "loadtest", "--url", url, "--model", MODEL, "--target", "grpc-stream",
        "--grpc-url", f"127.0.0.1:{grpc_port}", "--rate", "100", "--duration", "1", "--warmup", "0.2",
        "--requests", "500", "--json", str(tmp_path / "g.json"), "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["target"]["url"] == f"grpc://127.0.0.1:{grpc_port} (stream)"
    (step,) = report["steps"]
    assert step["errors"] == {}
    assert 50 <= step["ok"] <= 160  # Poisson(100) over 1 s
    assert step["server"]["requests"] >= step["ok"] - 1  # /metrics is scraped over HTTP while the load is gRPC
