"""The performance bars, evaluated as ratios of figures measured in the same run.

Every figure is read from the results the run just measured; nothing is typed in by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

from bench.kinds import PEAK_ROUTES, ROUTE_NAMES
from bench.pairs import Spec, find
from bench.preprocess_bench import PreprocessResult
from bench.results import Bar, ModelResult


def _bar(name: str, measured: str, target: str, ratio: float | None, threshold: float, higher: bool = True) -> Bar:
    met = None if ratio is None else (ratio >= threshold if higher else ratio <= threshold)
    return Bar(name, measured, target, ratio, met)


def _in_turns(model: ModelResult, spec: Spec, name: str, target: str, threshold: float) -> Bar:
    """A bar from the rounds in which the service and a reference server took turns (``bench.pairs``): the median
    round's figures and every round's ratio; not measured when no round ran. At concurrency 1 lower is better."""
    pairing = find(model.pairs, spec)
    higher = spec[2] != 1
    if pairing is None:
        return _bar(name, "-", target, None, threshold, higher)
    middle = pairing.median_round()
    ours, theirs = pairing.service[middle], pairing.theirs[middle]
    figures = f"{ours:.2f} vs {theirs:.2f} ms" if spec[2] == 1 else f"{ours:,.0f} vs {theirs:,.0f} img/s"
    rounds = " · ".join(f"{ratio:.2f}" for ratio in pairing.ratios())
    return _bar(name, f"{figures} (median round; rounds {rounds})", target, pairing.ratio(), threshold, higher)


def _resnet18(model: ModelResult) -> list[Bar]:
    """A compute-bound model: the service's peak against raw ORT, and its latency cost when idle, both from the
    rounds in which the two took turns (``bench.turns``); not measured when no round ran."""
    service = model.servers.get("service")
    turns = service.turns if service else None
    bars = []
    for route in PEAK_ROUTES:
        name = f"ResNet-18 {ROUTE_NAMES[route]}: service fully loaded / raw ORT best, in turns"
        if turns is None:
            bars.append(_bar(name, "-", ">= 0.95", None, 0.95))
            continue
        rounds = " · ".join(f"{ratio:.2f}" for ratio in turns.ratios(route))
        turn = turns.median_round(route)
        measured = (
            f"{turn.service_images_per_s[route]:,.1f} vs raw {turn.raw_images_per_s:,.1f} img/s "
            f"(median round; rounds {rounds})"
        )
        bars.append(_bar(name, measured, ">= 0.95", turns.ratio(route), 0.95))
    name = "ResNet-18 c=1: service p50 - raw batch-1 p50 (ms), in turns"
    if turns is None:
        return [*bars, _bar(name, "-", "<= 1 ms", None, 1.0, higher=False)]
    gaps = " · ".join(f"{gap:.2f}" for gap in turns.gaps_ms())
    return [*bars, _bar(name, f"rounds {gaps}", "<= 1 ms", turns.gap_ms(), 1.0, higher=False)]


def _tiny_cnn(model: ModelResult) -> list[Bar]:
    """An overhead-bound model: the service against the plain FastAPI endpoint (in turns), and client-side
    batches against raw ORT."""
    raw = model.raw
    bars = [
        _in_turns(
            model, ("baseline", "tensor", 64), "small CNN v2 binary, c=64: service / plain FastAPI", ">= 2.5", 2.5
        ),
        _in_turns(model, ("baseline", "tensor", 1), "small CNN v2 binary, c=1: service p50 / plain p50", "<= 1.0", 1.0),
    ]
    best = model.peak("service", "tensor_batch32")
    ratio = best.images_per_s / raw.batch32_images_per_s if best else None
    measured = f"{best.images_per_s:,.0f} vs raw b32 {raw.batch32_images_per_s:,.0f} img/s" if best else "-"
    bars.append(_bar("small CNN, 32 rows/request: service / raw ORT batch 32", measured, ">= 0.8", ratio, 0.8))
    return bars


def _lenet5(model: ModelResult) -> list[Bar]:
    """The default model at default settings: against the plain endpoint and the bare ASGI ceiling, both routes,
    each measured in turns with the server it is divided by."""
    return [
        _in_turns(model, ("baseline", "tensor", 64), "LeNet-5 v2 binary, c=64: service / plain FastAPI", ">= 2.5", 2.5),
        _in_turns(model, ("bare", "tensor", 64), "LeNet-5 v2 binary, c=64: service / bare ASGI", ">= 0.85", 0.85),
        _in_turns(
            model, ("baseline", "image", 64), "LeNet-5 REST PNG, c=64: service / plain FastAPI + Pillow", ">= 1.5", 1.5
        ),
        _in_turns(model, ("baseline", "image", 1), "LeNet-5 REST PNG, c=1: service p50 / plain p50", "<= 1.0", 1.0),
    ]


def summarise_bars(models: Mapping[str, ModelResult], preprocess: PreprocessResult) -> tuple[Bar, ...]:
    """The performance bars of the models measured, each with its figures, ratio and whether it holds.

    Args:
        models: The run's results per model; a bar whose model did not run is left out.
        preprocess: Preprocessing alone.
    """
    bars = []
    if "lenet5_digits" in models:
        bars += _lenet5(models["lenet5_digits"])
    if "resnet18" in models:
        bars += _resnet18(models["resnet18"])
    if "tiny_cnn" in models:
        bars += _tiny_cnn(models["tiny_cnn"])
    rate = preprocess.images_per_cpu_s
    name = "preprocess alone, 224x224 JPEG: images per CPU-second"
    bars.append(_bar(name, f"{rate:,.0f}", ">= 1,500", rate / 1500, 1.0))
    return tuple(bars)
