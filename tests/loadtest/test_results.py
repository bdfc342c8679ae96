"""The typed report and its JSON: a report saved by an earlier version reads back and writes out byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.prom import ServerTiming
from loadtest.report import read_json, table, write_json
from loadtest.results import ClosedLoad, Latency, OpenLoad, load_from_dict
from loadtest.stats import LatencySummary

SAVED = Path(__file__).parent / "saved_report.json"


def test_a_saved_report_reads_back_and_writes_the_same_json(tmp_path: Path) -> None:
    """``saved_report.json`` was written by loadtest 0.1.0, which built reports as dicts.

    It holds closed and open steps, server views from histograms and from Triton counters, a step without
    successes, a server process, and a step whose server view failed.
    """
    report = read_json(SAVED)
    assert [step.load for step in report.steps] == [
        ClosedLoad(1),
        ClosedLoad(8),
        OpenLoad(100.0, "constant"),
        OpenLoad(400.0, "constant"),
    ]
    write_json(report, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == SAVED.read_text()
    assert "100/s constant" in table(report)


def test_typed_fields_read_what_the_file_holds() -> None:
    data = json.loads(SAVED.read_text())
    first, _, third, fourth = read_json(SAVED).steps
    assert first.latency is not None
    assert first.latency.p50_ms == data["steps"][0]["latency_ms"]["p50"]
    assert first.server is not None
    queue = data["steps"][0]["server"]["queue_ms"]
    assert first.server.queue_ms == ServerTiming(queue["mean"], queue["p50"], queue["p99"])
    assert first.server_process is not None
    assert first.server_process.pid == 4242
    assert third.server is not None
    assert third.server.compute_ms == ServerTiming(data["steps"][2]["server"]["compute_ms"]["mean"])
    assert third.generator.max_backlog == 3
    assert fourth.latency is None


def test_latency_in_milliseconds_keeps_the_report_keys() -> None:
    summary = LatencySummary.of([0.003, 0.001, 0.002, 0.004])
    assert summary is not None
    latency = Latency.of(summary)
    assert latency.p50_ms == pytest.approx(2.0)
    assert latency.p90_ms == pytest.approx(4.0)
    assert latency.mean_ms == pytest.approx(2.5)
    assert list(latency.to_dict()) == ["p50", "p90", "p99", "p99.9", "mean", "max"]
    assert Latency.from_dict(latency.to_dict()) == latency


def test_loads_label_and_round_trip() -> None:
    closed, opened = ClosedLoad(16), OpenLoad(500.0, "poisson")
    assert (closed.label, opened.label) == ("c=16", "500/s poisson")
    assert (closed.level, opened.level) == (16, 500.0)
    assert load_from_dict(closed.to_dict()) == closed
    assert load_from_dict(opened.to_dict()) == opened


def test_a_counter_only_timing_has_just_a_mean() -> None:
    assert ServerTiming(3.0).to_dict() == {"mean": 3.0}
    assert ServerTiming.from_dict({"mean": 3.0}) == ServerTiming(3.0)
    assert ServerTiming.from_dict(None) is None


def test_a_malformed_report_is_refused_with_the_path(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('{"target": {}, "steps": []}')
    with pytest.raises(ValueError, match="r.json is not a loadtest JSON report"):
        read_json(tmp_path / "r.json")
