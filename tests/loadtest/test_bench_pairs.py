"""The service and its reference servers in turns (``bench.pairs``): the order of each round, the figures compared,
the medians, and how the rounds are reported."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.bars import summarise_bars
from bench.kinds import Route, ServerKind
from bench.pairs import PAIRINGS, Pairing, Spec, find, markdown, take_pairs
from bench.preprocess_bench import PreprocessResult
from bench.raw_ort import BATCH_SIZES, RawOrt, RawPoint, SettingRuns, ThreadSetting
from bench.results import ModelResult
from loadtest.report import summarise
from loadtest.results import ClosedLoad, Latency, StepReport
from loadtest.step_result import StepResult

SPECS: tuple[Spec, ...] = (("bare", "tensor", 64), ("baseline", "image", 1))


def _step(concurrency: int, answers: int, p50_ms: float) -> StepReport:
    """A closed-loop step with ``answers`` answers in a 1 s window, each taking ``p50_ms``."""
    result = StepResult([p50_ms / 1e3] * answers, Counter({"200": answers}), 1.0, answers, span_s=1.0, cpu_s=0.1)
    return summarise(ClosedLoad(concurrency), result, 1, 1024)


def test_each_comparison_is_measured_once_a_round_and_the_order_flips_every_round() -> None:
    calls: list[str] = []
    # The warm-up's figures (first in each list) are nowhere in the results.
    rates = {"service": iter([1, 900, 950, 1000]), "bare": iter([5000, 1000, 1000, 1000])}
    p50s = {"service": iter([9.0, 0.20, 0.30, 0.25]), "baseline": iter([0.01, 0.30, 0.30, 0.30])}

    def measure(kind: ServerKind, route: Route, users: int) -> StepReport:
        calls.append(f"{kind} {route} c={users}")
        if users == 1:
            return _step(users, 100, next(p50s[kind]))
        return _step(users, next(rates[kind]), 5.0)

    pairings = take_pairs(3, SPECS, measure, lambda: True)

    first = ["service tensor c=64", "bare tensor c=64", "service image c=1", "baseline image c=1"]
    flipped = ["bare tensor c=64", "service tensor c=64", "baseline image c=1", "service image c=1"]
    assert calls == [*first, *first, *flipped, *first]  # the warm-up, then three rounds
    bare, idle = pairings
    assert (bare.reference, bare.route, bare.concurrency) == SPECS[0]
    assert bare.service == (900.0, 950.0, 1000.0)
    assert bare.theirs == (1000.0, 1000.0, 1000.0)
    assert bare.ratio() == pytest.approx(0.95)
    # At concurrency 1 the figure is the p50, and lower is better: 0.25 / 0.30 is the median round.
    assert idle.unit == "p50 ms"
    assert idle.ratios() == pytest.approx([0.2 / 0.3, 1.0, 0.25 / 0.3])
    assert (idle.ratio(), idle.median_round()) == (pytest.approx(0.25 / 0.3), 2)


def test_the_budget_check_ends_the_rounds_early_and_no_round_gives_no_pairing() -> None:
    asked = iter([True, True, True, False])  # the warm-up, two rounds
    pairings = take_pairs(5, SPECS, lambda kind, route, users: _step(users, 500, 1.0), lambda: next(asked))
    assert [len(p.service) for p in pairings] == [2, 2]
    assert take_pairs(5, SPECS, lambda kind, route, users: _step(users, 500, 1.0), lambda: False) == ()


def test_a_server_that_answers_nothing_is_an_error_not_a_ratio_of_zero() -> None:
    def measure(kind: ServerKind, route: Route, users: int) -> StepReport:
        return _step(users, 0 if kind == "bare" else 500, 1.0)

    with pytest.raises(ValueError, match="answered nothing at c=64"):
        take_pairs(1, SPECS, measure, lambda: True)


@pytest.mark.parametrize("model", sorted(PAIRINGS))
def test_each_comparison_measured_in_turns_is_read_by_exactly_one_bar(model: str) -> None:
    setting = ThreadSetting(2, True)
    runs = SettingRuns(setting, tuple(RawPoint(b, 10, 1000.0, Latency(*[0.1] * 6)) for b in BATCH_SIZES))
    raw = RawOrt((runs,), runs, 1000.0, 8, 1000.0, 0.1, 100.0)
    specs = PAIRINGS[model]
    # Each comparison gets a ratio of its own (2, 3, 4, ...), so a bar shows which one it read.
    pairings = tuple(Pairing(*spec, (float(i + 2),), (1.0,)) for i, spec in enumerate(specs))
    bars = summarise_bars({model: ModelResult(raw, {}, pairings)}, PreprocessResult(1, 1.0, 1.0, 1, [1]))
    read = sorted(bar.ratio for bar in bars if "median round" in bar.measured)
    assert read == [float(i + 2) for i in range(len(specs))]


def test_the_rounds_are_reported_in_markdown_and_kept_in_results_json() -> None:
    pairings = (
        Pairing("bare", "tensor", 64, (16_000.0, 21_000.0), (20_000.0, 20_000.0)),
        Pairing("baseline", "image", 1, (0.24, 0.30), (0.30, 0.30)),
    )
    text = "\n".join(markdown("lenet5_digits", pairings))
    assert "## The service and the reference servers in turns: lenet5_digits" in text
    row = "| v2 binary tensor c=64: service / bare ASGI, ORT inline, 1 worker/CPU | img/s | "
    assert row + "16,000 / 20,000 (0.80) · 21,000 / 20,000 (1.05) | 0.93 |" in text
    row = "| REST image c=1: service / plain FastAPI | p50 ms | "
    assert row + "0.24 / 0.30 (0.80) · 0.30 / 0.30 (1.00) | 0.90 |" in text
    assert pairings[1].to_dict() == {
        "reference": "baseline",
        "route": "image",
        "concurrency": 1,
        "unit": "p50 ms",
        "service": [0.24, 0.30],
        "reference_figures": [0.30, 0.30],
    }
    assert find(pairings, ("baseline", "image", 1)) is pairings[1]
    assert find(pairings, ("baseline", "image", 64)) is None
