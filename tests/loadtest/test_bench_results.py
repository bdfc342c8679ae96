"""The benchmark's typed results: the performance bars read from them, and ``results.json``'s layout."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from bench.bars import summarise_bars
from bench.client_cost import ClientCost, ClientRun
from bench.int8 import Int8Result
from bench.machine import Machine
from bench.pairs import Pairing
from bench.preprocess_bench import PreprocessResult
from bench.raw_ort import BATCH_SIZES, RawOrt, RawPoint, SettingRuns, ThreadSetting
from bench.report import markdown
from bench.results import BenchResults, ModelResult, Pinning, ServerRuns
from loadtest.report import summarise
from loadtest.results import ClosedLoad, Latency, SweepReport, Target
from loadtest.step_result import StepResult

PREPROCESS = PreprocessResult(3000, 1200.0, 1100.0, 20_000, [3, 224, 224])
INT8 = Int8Result(
    "resnet18", "photo crops", 19, 5, None, None, 0.8, 46_796_940, 11_786_153,
    {"batch": 8, "runs": 20, "fp32_median_ms": 200.0, "int8_median_ms": 80.0, "int8_speedup": 2.5}, 30.0,
)  # fmt: skip


def _latency(p50_ms: float) -> Latency:
    return Latency(p50_ms, p50_ms, p50_ms, p50_ms, p50_ms, p50_ms)


def _raw(best_images_per_s: float, batch32_images_per_s: float, batch1_p50_ms: float) -> RawOrt:
    setting = ThreadSetting(2, True)
    points = tuple(RawPoint(b, 10, best_images_per_s if b == 8 else 1.0, _latency(batch1_p50_ms)) for b in BATCH_SIZES)
    runs = SettingRuns(setting, points)
    return RawOrt((runs,), runs, best_images_per_s, 8, batch32_images_per_s, batch1_p50_ms, 100.0)


def _sweep(images_per_s: dict[int, float], p50_ms: float) -> SweepReport:
    """A closed-loop sweep with ``images_per_s`` at each concurrency (one image per request, a 1 s window)."""
    steps = []
    for concurrency, rate in images_per_s.items():
        n = int(rate)
        result = StepResult([p50_ms / 1e3] * n, Counter({"200": n}), 1.0, n, span_s=1.0, cpu_s=0.1, sent=n)
        steps.append(summarise(ClosedLoad(concurrency), result, 1, 1024))
    target = Target("http://127.0.0.1:1", "tiny_cnn", "v2 binary tensors, 1 row(s)/request", 1, 100)
    return SweepReport("cnnserve loadtest", "0.1.0", "2026-01-01T00:00:00+00:00", target, {}, tuple(steps))


def _tiny_cnn() -> ModelResult:
    return ModelResult(
        raw=_raw(best_images_per_s=9000.0, batch32_images_per_s=20000.0, batch1_p50_ms=0.1),
        servers={
            "baseline": ServerRuns({"tensor": _sweep({1: 1000.0, 64: 2000.0}, p50_ms=0.5)}, [80.0]),
            "service": ServerRuns(
                {
                    "tensor": _sweep({1: 900.0, 64: 5000.0}, p50_ms=0.4),
                    "tensor_batch32": _sweep({1: 8000.0, 4: 16000.0}, p50_ms=2.0),
                },
                [30.0, 120.0, 121.0],
            ),
            "bare": None,  # skipped for time
        },
        pairs=(
            Pairing("baseline", "tensor", 64, (5000.0, 4000.0, 6000.0), (2000.0, 2000.0, 2000.0)),
            Pairing("baseline", "tensor", 1, (0.4, 0.6), (0.5, 0.5)),
        ),
    )


def _lenet5() -> ModelResult:
    return ModelResult(
        raw=_raw(best_images_per_s=50000.0, batch32_images_per_s=90000.0, batch1_p50_ms=0.02),
        servers={
            "baseline": ServerRuns(
                {"tensor": _sweep({1: 800.0, 64: 1000.0}, 0.9), "image": _sweep({1: 700.0, 64: 800.0}, 1.2)}, [70.0]
            ),
            "bare": ServerRuns({"tensor": _sweep({1: 2000.0, 64: 7000.0}, 0.3)}, [20.0, 60.0, 60.0]),
            "service": ServerRuns(
                {"tensor": _sweep({1: 1900.0, 64: 6000.0}, 0.4), "image": _sweep({1: 1000.0, 64: 1500.0}, 1.0)},
                [30.0, 100.0, 100.0],
            ),
        },
        pairs=(
            Pairing("baseline", "tensor", 64, (6000.0, 6100.0, 5900.0), (1000.0, 1000.0, 1000.0)),
            Pairing("bare", "tensor", 64, (6000.0, 5000.0, 6300.0), (7000.0, 7000.0, 7000.0)),
            Pairing("baseline", "image", 64, (1500.0, 1600.0, 1400.0), (800.0, 800.0, 800.0)),
            Pairing("baseline", "image", 1, (1.0, 1.3, 0.9), (1.2, 1.2, 1.2)),
        ),
    )


def test_the_default_models_bars_compare_the_default_service_with_both_references_in_turns() -> None:
    # The sweeps say otherwise (the service at 6,000 img/s and the bare app at 7,000 in all of them): the bars
    # read the rounds in turns, and take the median round.
    bars = {bar.name: bar for bar in summarise_bars({"lenet5_digits": _lenet5()}, PREPROCESS)}
    assert bars["LeNet-5 v2 binary, c=64: service / plain FastAPI"].ratio == pytest.approx(6.0)
    bare = bars["LeNet-5 v2 binary, c=64: service / bare ASGI"]
    assert (bare.ratio, bare.met) == (pytest.approx(6000 / 7000), True)
    assert bare.measured == "6,000 vs 7,000 img/s (median round; rounds 0.86 · 0.71 · 0.90)"
    rest = bars["LeNet-5 REST PNG, c=64: service / plain FastAPI + Pillow"]
    assert (rest.ratio, rest.met) == (pytest.approx(1.875), True)
    idle = bars["LeNet-5 REST PNG, c=1: service p50 / plain p50"]
    assert (idle.ratio, idle.met) == (pytest.approx(1.0 / 1.2), True)
    assert idle.measured == "1.00 vs 1.20 ms (median round; rounds 0.83 · 1.08 · 0.75)"


def test_without_rounds_in_turns_the_default_models_bars_are_not_measured() -> None:
    model = dataclasses.replace(_lenet5(), pairs=())
    bars = [bar for bar in summarise_bars({"lenet5_digits": model}, PREPROCESS) if bar.name.startswith("LeNet-5")]
    assert len(bars) == 4
    assert all((bar.ratio, bar.met, bar.measured) == (None, None, "-") for bar in bars)


def test_bars_are_ratios_of_the_typed_figures() -> None:
    bars = {bar.name: bar for bar in summarise_bars({"tiny_cnn": _tiny_cnn()}, PREPROCESS)}
    versus_baseline = bars["small CNN v2 binary, c=64: service / plain FastAPI"]
    assert versus_baseline.ratio == pytest.approx(5000 / 2000)
    assert versus_baseline.met is True
    assert versus_baseline.measured == "5,000 vs 2,000 img/s (median round; rounds 2.50 · 2.00 · 3.00)"
    idle = bars["small CNN v2 binary, c=1: service p50 / plain p50"]
    assert idle.ratio == pytest.approx((0.8 + 1.2) / 2)  # the median of an even count of rounds
    assert idle.measured == "0.40 vs 0.50 ms (median round; rounds 0.80 · 1.20)"
    assert idle.met is True
    batch32 = bars["small CNN, 32 rows/request: service / raw ORT batch 32"]
    assert batch32.ratio == pytest.approx(16000 / 20000)
    assert bars["preprocess alone, 224x224 JPEG: images per CPU-second"].met is False  # 1,200 < 1,500


def test_a_server_that_did_not_run_gives_no_steps() -> None:
    model = _tiny_cnn()
    assert model.steps("bare", "tensor") == []
    assert model.peak("bare", "tensor") is None
    assert model.at("baseline", "tensor", 64) is not None
    assert model.at("baseline", "tensor", 16) is None
    assert model.to_dict()["servers"]["bare"] == {}


def test_results_json_keeps_its_layout_and_the_markdown_names_the_bars() -> None:
    models = {"tiny_cnn": _tiny_cnn()}
    results = BenchResults(
        command="python -m bench --quick",
        profile="quick",
        started_at="2026-01-01T00:00:00+00:00",
        machine=Machine("cpu", 2, [0, 1], 4.0, [0.5, 0.4, 0.3], "Linux", "3.11.9", {"numpy": "2.0"}),
        pinning=Pinning("all", "all"),
        preprocess=PREPROCESS,
        client_cost=ClientCost(8, {"aiohttp": ClientRun(800, 800, 150.0, 2000.0)}),
        models=models,
        skipped=["tiny_cnn bare: the time budget is spent (3 s left)"],
        elapsed_s=12.0,
        bars=summarise_bars(models, PREPROCESS),
        int8=(INT8,),
    )
    data = results.to_dict()
    assert list(data) == [
        "command", "profile", "started_at", "machine", "pinning", "preprocess", "client_cost",
        "models", "skipped", "elapsed_s", "bars", "int8",
    ]  # fmt: skip
    assert data["int8"][0]["speed"]["int8_speedup"] == 2.5
    assert data["client_cost"] == {
        "concurrency": 8,
        "aiohttp": {"requests": 800, "ok": 800, "cpu_us_per_request": 150.0, "requests_per_s": 2000.0},
    }
    raw = data["models"]["tiny_cnn"]["raw"]
    assert raw["best_setting"] == "2 thread(s), spinning on"
    assert "recheck" not in raw
    assert set(data["models"]["tiny_cnn"]["servers"]["service"]) == {"memory_mib", "tensor", "tensor_batch32"}
    assert data["bars"][0]["bar"] == "small CNN v2 binary, c=64: service / plain FastAPI"
    assert data["models"]["tiny_cnn"]["pairs"] == [pairing.to_dict() for pairing in models["tiny_cnn"].pairs]
    text = markdown(results)
    assert "## Performance bars, as ratios within this run" in text
    assert "issue" not in text.lower()
    assert "| v2 binary tensor | service (default settings) |" in text
    assert "| tiny_cnn | service (default settings) | 30, 120, 121 | 271 |" in text  # memory of every process
    assert (
        "| resnet18 | 8 × 20 | 200.00 | 80.00 | 2.50× | 46,796,940 | 11,786,153 | 19 (photo crops) | 5 | - | - | "
        "80.00% |" in text
    )


def test_the_grpc_routes_are_reported_beside_http_v2_as_ratios_without_a_bar() -> None:
    model = _lenet5()
    service = model.servers["service"]
    assert service is not None
    service.sweeps["grpc"] = _sweep({1: 950.0, 64: 3000.0}, 0.8)
    service.sweeps["grpc_stream"] = _sweep({1: 1900.0}, 0.5)
    bars = summarise_bars({"lenet5_digits": model}, PREPROCESS)
    assert not [bar for bar in bars if "gRPC" in bar.name]
    results = BenchResults(
        "python -m bench --quick", "quick", "2026-01-01T00:00:00+00:00",
        Machine("cpu", 2, [0, 1], 4.0, [0.5, 0.4, 0.3], "Linux", "3.11.9", {}), Pinning("all", "all"), PREPROCESS,
        None, {"lenet5_digits": model}, [], 12.0, bars,
    )  # fmt: skip
    text = markdown(results)
    assert "## gRPC beside HTTP v2 binary: lenet5_digits" in text
    assert "| c=1 | 1,900 (0.4/0.4) | 950 (0.8/0.8) | 0.50 | 1,900 (0.5/0.5) | 1.00 | 10% / 10% / 10% |" in text
    assert "| c=64 | 6,000 (0.4/0.4) | 3,000 (0.8/0.8) | 0.50 | - | - | 10% / 10% / - |" in text
    assert set(results.to_dict()["models"]["lenet5_digits"]["servers"]["service"]) >= {"grpc", "grpc_stream"}
