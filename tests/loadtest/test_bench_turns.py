"""The service and raw ORT in turns (``bench.turns``): the order of each round, the medians, and the bars from them."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.bars import summarise_bars
from bench.kinds import Route
from bench.preprocess_bench import PreprocessResult
from bench.raw_ort import BATCH_SIZES, RawOrt, RawPoint, SettingRuns, ThreadSetting
from bench.results import ModelResult, ServerRuns, Turn, Turns
from bench.turns import full_load, markdown, take_turns
from loadtest.report import summarise
from loadtest.results import ClosedLoad, Latency, StepReport, SweepReport, Target
from loadtest.step_result import StepResult

PREPROCESS = PreprocessResult(3000, 1600.0, 1500.0, 20_000, [3, 224, 224])


def _step(concurrency: int, images_per_s: float, p50_ms: float) -> StepReport:
    """A closed-loop step with ``images_per_s`` answers in a 1 s window, each taking ``p50_ms``."""
    n = int(images_per_s)
    result = StepResult([p50_ms / 1e3] * n, Counter({"200": n}), 1.0, n, span_s=1.0, cpu_s=0.1, sent=n)
    return summarise(ClosedLoad(concurrency), result, 1, 1024)


def _sweep(images_per_s: dict[int, float]) -> SweepReport:
    steps = tuple(_step(c, rate, 10.0) for c, rate in images_per_s.items())
    target = Target("http://127.0.0.1:1", "resnet18", "v2 binary tensors, 1 row(s)/request", 1, 100)
    return SweepReport("cnnserve loadtest", "0.1.0", "2026-01-01T00:00:00+00:00", target, {}, steps)


def _point(batch: int, images_per_s: float, p50_ms: float) -> RawPoint:
    return RawPoint(batch, 10, images_per_s, Latency(p50_ms, p50_ms, p50_ms, p50_ms, p50_ms, p50_ms))


def test_each_round_measures_both_sides_and_the_order_flips_every_round() -> None:
    calls: list[str] = []
    raw_rates = iter([100.0, 110.0, 90.0])

    def raw_peak() -> RawPoint:
        calls.append("raw peak")
        return _point(16, next(raw_rates), 150.0)

    def raw_lone() -> RawPoint:
        calls.append("raw b1")
        return _point(1, 80.0, 10.0)

    def service(route: Route, users: int) -> StepReport:
        calls.append(f"service {route} c={users}")
        return _step(users, 99.0, 10.5 if users == 1 else 500.0)

    rounds = take_turns(3, raw_peak, raw_lone, service, {"tensor": 64, "image": 16}, lambda: True)

    peak = ["service tensor c=64", "service image c=16"]
    assert calls == [
        "raw peak", *peak, "raw b1", "service tensor c=1",
        *peak, "raw peak", "service tensor c=1", "raw b1",
        "raw peak", *peak, "raw b1", "service tensor c=1",
    ]  # fmt: skip
    assert [turn.raw_images_per_s for turn in rounds] == [100.0, 110.0, 90.0]
    assert rounds[1].service_images_per_s == {"tensor": 99.0, "image": 99.0}
    assert (rounds[0].raw_batch1_p50_ms, rounds[0].service_c1_p50_ms) == (10.0, pytest.approx(10.5))


def test_turns_stop_when_the_time_budget_is_spent() -> None:
    budget = iter([True, False, True])
    rounds = take_turns(
        3,
        lambda: _point(8, 100.0, 80.0),
        lambda: _point(1, 50.0, 20.0),
        lambda route, users: _step(users, 95.0, 21.0),
        {"tensor": 4, "image": 4},
        lambda: next(budget),
    )
    assert len(rounds) == 1


def test_a_service_step_that_answered_nothing_is_an_error_not_a_latency_of_zero() -> None:
    timeouts = StepResult([], Counter({"timeout": 3}), 1.0, 3, span_s=1.0, cpu_s=0.1, sent=3)
    empty = summarise(ClosedLoad(1), timeouts, 1, 1)
    with pytest.raises(ValueError, match="answered nothing at c=1"):
        take_turns(
            1,
            lambda: _point(8, 100.0, 80.0),
            lambda: _point(1, 50.0, 20.0),
            lambda route, users: empty if users == 1 else _step(users, 95.0, 21.0),
            {"tensor": 4, "image": 4},
            lambda: True,
        )


def test_the_service_is_measured_at_the_highest_concurrency_not_its_luckiest_step() -> None:
    sweeps: dict[Route, SweepReport] = {
        "tensor": _sweep({1: 90.0, 16: 110.0, 64: 108.0}),
        "image": _sweep({1: 80.0, 64: 109.0, 16: 100.0}),
    }
    assert full_load(sweeps) == {"tensor": 64, "image": 64}
    assert full_load({"tensor": sweeps["tensor"]}) is None  # every route of the bars is needed
    assert full_load({**sweeps, "image": _sweep({64: 0.0})}) is None  # a step that answered nothing does not count


TURNS = Turns(
    "2 thread(s), spinning off",
    16,
    "2 thread(s), spinning on",
    {"tensor": 64, "image": 64},
    (
        Turn(100.0, {"tensor": 97.0, "image": 90.0}, 10.0, 10.4),
        Turn(120.0, {"tensor": 108.0, "image": 110.0}, 9.0, 10.5),  # a slow and a fast moment of the machine
        Turn(110.0, {"tensor": 107.8, "image": 106.0}, 9.5, 11.0),
    ),
)


def _resnet18(turns: Turns | None) -> ModelResult:
    setting = ThreadSetting(2, False)
    runs = SettingRuns(setting, tuple(_point(b, 125.0 if b == 16 else 90.0, 9.0) for b in BATCH_SIZES))
    raw = RawOrt((runs,), runs, 125.0, 16, 90.0, 9.0, 90.0)
    service = ServerRuns({"tensor": _sweep({64: 108.0}), "image": _sweep({64: 110.0})}, [70.0, 600.0], turns)
    return ModelResult(raw, {"baseline": None, "bare": None, "service": service})


def test_the_resnet_bars_take_the_median_round_not_the_sweeps_highest_raw_figure() -> None:
    assert TURNS.ratios("tensor") == pytest.approx([0.97, 0.9, 0.98])
    bars = {bar.name: bar for bar in summarise_bars({"resnet18": _resnet18(TURNS)}, PREPROCESS)}
    tensor = bars["ResNet-18 v2 binary tensor: service fully loaded / raw ORT best, in turns"]
    assert (tensor.ratio, tensor.met) == (pytest.approx(0.97), True)  # the sweep's 108 / 125 would be 0.86
    assert tensor.measured == "97.0 vs raw 100.0 img/s (median round; rounds 0.97 · 0.90 · 0.98)"
    image = bars["ResNet-18 REST image: service fully loaded / raw ORT best, in turns"]
    assert (image.ratio, image.met) == (pytest.approx(0.9166, abs=1e-3), False)
    lone = bars["ResNet-18 c=1: service p50 - raw batch-1 p50 (ms), in turns"]
    assert (lone.ratio, lone.met, lone.measured) == (pytest.approx(1.5), False, "rounds 0.40 · 1.50 · 1.50")


def test_without_turns_the_resnet_bars_are_not_measured() -> None:
    bars = [bar for bar in summarise_bars({"resnet18": _resnet18(None)}, PREPROCESS) if "ResNet-18" in bar.name]
    assert len(bars) == 3
    assert all(bar.ratio is None and bar.met is None for bar in bars)


def test_the_rounds_are_reported_and_kept_in_results_json() -> None:
    text = "\n".join(markdown("resnet18", TURNS))
    assert "## The service and raw ONNX Runtime in turns: resnet18" in text
    assert "(2 thread(s), spinning off, batch 16; batch 1 with 2 thread(s), spinning on)" in text
    assert "| 2 | 120.0 | 108.0 | 0.90 | 110.0 | 0.92 | 9.00 | 10.50 | 1.50 |" in text
    data = _resnet18(TURNS).to_dict()["servers"]["service"]["turns"]
    assert data["concurrency"] == {"tensor": 64, "image": 64}
    assert data["rounds"][0] == {
        "raw_images_per_s": 100.0,
        "service_images_per_s": {"tensor": 97.0, "image": 90.0},
        "raw_batch1_p50_ms": 10.0,
        "service_c1_p50_ms": 10.4,
    }
