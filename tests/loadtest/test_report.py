"""Reports: a step's summary from raw results, the table, JSON round trip, the PNG, and the CLI around them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from loadtest.cli import main
from loadtest.payloads import Workload
from loadtest.plot import plot
from loadtest.prom import ServerTiming, ServerView
from loadtest.report import failed_steps, read_json, summarise, table, write_json
from loadtest.results import ClosedLoad, OpenLoad, ServerProcess, SweepReport, Target
from loadtest.step_result import StepResult

WORKLOAD = Workload("v2 binary tensors, 4 row(s)/request", (b"",), 4, 1000)
SERVER = ServerView(
    source="cnnserve histograms",
    requests=100.0,
    batches=13.0,
    mean_batch_size=7.5,
    queue_ms=ServerTiming(0.5, p50_ms=0.4, p99_ms=2.0),
    compute_ms=ServerTiming(3.0),
)


def _result(latencies_ms: list[float], errors: dict[str, int], cpu_s: float = 0.1) -> StepResult:
    outcomes = Counter({"200": len(latencies_ms), **errors})
    n = len(latencies_ms)
    return StepResult([v / 1e3 for v in latencies_ms], outcomes, 2.0, n, span_s=2.0, cpu_s=cpu_s, sent=n)


def _report() -> SweepReport:
    steps = (
        summarise(ClosedLoad(1), _result([1.0, 2.0, 3.0, 4.0], {}), 4, 1024),
        summarise(ClosedLoad(8), _result([5.0] * 99 + [50.0], {"429": 3, "timeout": 1}, cpu_s=1.95), 4, 1024, SERVER),
    )
    target = Target("http://127.0.0.1:1", "m", WORKLOAD.description, 4, 1000)
    return SweepReport("cnnserve loadtest", "0.1.0", "2026-01-01T00:00:00+00:00", target, {"model": "m"}, steps)


def test_summary_counts_images_errors_and_generator_cpu() -> None:
    step = _report().steps[1]
    assert step.ok == 100
    assert step.requests == 104
    assert step.errors == {"429": 3, "timeout": 1}
    assert step.throughput_rps == pytest.approx(50.0)
    assert step.images_per_s == pytest.approx(200.0)  # 4 rows per request
    assert step.latency is not None
    assert step.latency.p99_ms == pytest.approx(5.0)
    assert step.latency.max_ms == pytest.approx(50.0)
    assert step.generator.cpu_percent == pytest.approx(97.5)
    assert step.server == SERVER
    assert any("bottleneck" in w for w in step.warnings)
    assert _report().steps[0].warnings == ()


def test_open_loop_lag_is_reported_and_warned() -> None:
    result = _result([10.0], {})
    result.lag_sum_s, result.lag_max_s = 0.05, 0.05
    step = summarise(OpenLoad(100.0, "poisson"), result, 4, 1024)
    assert step.load.to_dict() == {"rate_per_s": 100.0, "arrival": "poisson"}
    assert step.generator.send_lag_mean_ms == pytest.approx(50.0)
    assert step.generator.send_lag_max_ms == pytest.approx(50.0)
    assert any("after their scheduled time" in w and "at most 1024" in w for w in step.warnings)


def test_server_problems_follow_the_generator_warnings() -> None:
    result = _result([], {"timeout": 2})
    step = summarise(
        ClosedLoad(2), result, 1, 1024, server_problems=("no server-side view: GET /metrics answered 404",)
    )
    assert step.latency is None
    assert step.warnings == ("no request succeeded in this step", "no server-side view: GET /metrics answered 404")


def test_table_has_a_row_per_step_and_lists_warnings() -> None:
    text = table(_report())
    lines = text.splitlines()
    assert lines[0] == "http://127.0.0.1:1  model m  v2 binary tensors, 4 row(s)/request"
    assert lines[1].split()[:5] == ["load", "offered/s", "req/s", "img/s", "p50"]
    assert lines[2].startswith("c=1 ")
    assert "429: 3, timeout: 1" in lines[3]
    assert "7.50" in lines[3]
    assert "0.40/2.00" in lines[3]
    assert "mean 3.00" in lines[3]
    assert lines[3].rstrip().endswith("98%")
    assert lines[4].startswith("warning (c=8): the load generator used 98% of a core")


def test_an_open_loop_step_that_could_not_offer_its_rate_fails_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schedule that stopped after 20 s of a 600 s step still printed a report; now the step says it failed."""
    honest = _result([5.0] * 196, {})  # 100/s asked for 2 s: 196 sent is within Poisson's spread of 200
    short = _result([5.0] * 38, {})  # 19/s of the 100 asked
    steps = (
        summarise(OpenLoad(100.0, "poisson"), honest, 1, 512),
        summarise(OpenLoad(100.0, "poisson"), short, 1, 512),
    )
    assert steps[0].offered_rps == pytest.approx(98.0)
    assert steps[0].failure is None
    assert steps[1].offered_rps == pytest.approx(19.0)
    assert steps[1].failure is not None
    assert "offered 19.0 req/s of the 100 asked" in steps[1].failure
    report = SweepReport("cnnserve loadtest", "0.1.0", "2026-01-01T00:00:00+00:00", _report().target, {}, steps)
    assert failed_steps(report) == [steps[1]]
    assert table(report).splitlines()[-1].startswith("FAILED (100/s poisson): offered 19.0 req/s of the 100 asked")
    write_json(report, tmp_path / "r.json")
    assert read_json(tmp_path / "r.json") == report
    assert main(["--show", str(tmp_path / "r.json")]) == 3  # the report is shown, and the run says it failed
    assert "FAILED (100/s poisson)" in capsys.readouterr().out


def test_a_generator_task_that_died_fails_its_step() -> None:
    result = _result([5.0] * 10, {})
    result.failures.append("OpenLoop._schedule died: RuntimeError('unable to perform operation')")
    step = summarise(ClosedLoad(4), result, 1, 512)
    assert step.failure == "OpenLoop._schedule died: RuntimeError('unable to perform operation')"


def test_the_table_shows_the_server_process_cpu() -> None:
    step = summarise(ClosedLoad(1), _result([1.0], {}), 1, 512, server_process=ServerProcess(1234, 187.4))
    report = SweepReport("cnnserve loadtest", "0.1.0", "2026-01-01T00:00:00+00:00", _report().target, {}, (step,))
    header, row = table(report).splitlines()[1:3]
    assert header.endswith("srv CPU  gen CPU")
    assert row.split()[-2:] == ["187%", "5%"]  # the server's CPU (one core = 100 %), then the generator's


def test_every_step_is_plotted_even_one_without_a_success(tmp_path: Path) -> None:
    steps = (
        summarise(OpenLoad(100.0, "poisson"), _result([5.0] * 200, {}), 1, 512),
        summarise(OpenLoad(3000.0, "poisson"), _result([], {"timeout": 40, "connect_failed": 7}), 1, 512),
    )
    report = SweepReport("cnnserve loadtest", "0.1.0", "2026-01-01T00:00:00+00:00", _report().target, {}, steps)
    plot(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_round_trip_plot_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report()
    write_json(report, tmp_path / "out" / "r.json")
    assert read_json(tmp_path / "out" / "r.json") == report
    plot(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--show", str(tmp_path / "out" / "r.json"), "--plot", str(tmp_path / "again.png")]) == 0
    assert table(report) in capsys.readouterr().out
    assert (tmp_path / "again.png").stat().st_size > 10_000


def test_reading_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a loadtest JSON report"):
        read_json(tmp_path / "x.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "1,x"], "not a comma-separated list"),
        (["--concurrency", "0"], "numbers > 0"),
        (["--concurrency", "1.5"], "whole numbers"),
        (["--rate", "10", "--concurrency", "4"], "not allowed with"),
        (["--duration", "0"], "--duration is 0.0"),
        (["--generate", "224"], "WIDTHxHEIGHT"),
        (["--images", "x"], "apply to --target rest"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unreachable_server_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "--duration", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("loadtest: ")
    assert len(err.strip().splitlines()) == 1
