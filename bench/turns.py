"""The service and raw ONNX Runtime measured in turns: how the bars that divide by raw ORT are taken.

The sweeps give each server's figure from one short step, while raw ORT's best is the highest of twenty-odd short
measurements (every thread setting and batch size, before and after the servers). On a shared machine whose speed
moves by several per cent from minute to minute, the highest of twenty draws sits above a typical draw by about the
margin the bars allow, so dividing by it is biased against the service. Here the sweep's winner (its best setting at
its best batch, and the setting with the lowest batch-1 latency) is measured again, taking turns with the service
fully loaded (each route at the sweep's highest concurrency: picking the sweep's best step would be the same bias
again) and at concurrency 1, for the same time each, round after round; the order within a round flips every
round, so a drift in the machine's speed favours neither side. Each round gives a ratio of neighbours, and the
bars take the median of the rounds.

Knows nothing of how a step is run: ``bench.suite`` hands in the two ways of measuring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bench.kinds import LONE_ROUTE, PEAK_ROUTES, ROUTE_NAMES, Route
from bench.pairs import figure
from bench.raw_ort import RawPoint
from bench.results import Turn, Turns
from loadtest.results import ClosedLoad, StepReport, SweepReport

#: ``raw()``: raw ORT at one batch size with one setting.
RawStep = Callable[[], RawPoint]
#: ``service(route, concurrency)``: one closed-loop step of the service.
ServiceStep = Callable[[Route, int], StepReport]


def full_load(sweeps: Mapping[Route, SweepReport]) -> dict[Route, int] | None:
    """The highest concurrency each ``PEAK_ROUTES`` sweep completed requests at; None if one has none."""
    concurrency = {}
    for route in PEAK_ROUTES:
        steps = sweeps[route].steps if route in sweeps else ()
        loads = [step.load.concurrency for step in steps if step.ok and isinstance(step.load, ClosedLoad)]
        if not loads:
            return None
        concurrency[route] = max(loads)
    return concurrency


def take_turns(
    rounds: int,
    raw_peak: RawStep,
    raw_lone: RawStep,
    service: ServiceStep,
    concurrency: dict[Route, int],
    may_continue: Callable[[], bool],
) -> tuple[Turn, ...]:
    """Measure ``rounds`` rounds, raw ORT first in even rounds and the service first in odd ones.

    Args:
        rounds: How many rounds at most.
        raw_peak: Measures raw ORT's best setting at its best batch.
        raw_lone: Measures raw ORT's fastest batch-1 setting at batch 1.
        service: Measures the service on a route at a concurrency.
        concurrency: The service's concurrency per route of ``PEAK_ROUTES`` (``full_load``).
        may_continue: Asked before each round; False (the time budget is spent) ends the turns early.
    """

    def served() -> dict[Route, float]:
        return {route: service(route, concurrency[route]).images_per_s for route in PEAK_ROUTES}

    done: list[Turn] = []
    for index in range(rounds):
        if not may_continue():
            break
        if index % 2 == 0:
            raw_rate, rates = raw_peak().images_per_s, served()
            raw_p50, lone_p50 = raw_lone().latency.p50_ms, figure(service(LONE_ROUTE, 1), 1)
        else:
            rates, raw_rate = served(), raw_peak().images_per_s
            lone_p50, raw_p50 = figure(service(LONE_ROUTE, 1), 1), raw_lone().latency.p50_ms
        done.append(Turn(raw_rate, rates, raw_p50, lone_p50))
    return tuple(done)


def markdown(model: str, turns: Turns) -> list[str]:
    """The rounds in which the service and raw ORT took turns, as a section of the run's Markdown."""
    peaks = " and ".join(f"{ROUTE_NAMES[r]} at c={turns.concurrency[r]}" for r in PEAK_ROUTES)
    lines = [
        f"## The service and raw ONNX Runtime in turns: {model}",
        "",
        f"Raw ORT at its best ({turns.raw_setting}, batch {turns.raw_batch}; batch 1 with {turns.raw_batch1_setting}) "
        f"and the service ({peaks}; {ROUTE_NAMES[LONE_ROUTE]} at c=1), each for one step's time, one right after "
        "the other; raw ORT goes first in odd rounds, the service in even ones. The bars take the median round.",
        "",
        "| round | raw img/s | "
        + " | ".join(f"{ROUTE_NAMES[r]} | / raw" for r in PEAK_ROUTES)
        + " | raw b1 p50 ms | service c=1 p50 ms | gap ms |",
        "|---|---|" + "---|---|" * len(PEAK_ROUTES) + "---|---|---|",
    ]
    for index, turn in enumerate(turns.rounds, 1):
        cells = [f"{index}", f"{turn.raw_images_per_s:,.1f}"]
        for route in PEAK_ROUTES:
            cells += [f"{turn.service_images_per_s[route]:,.1f}", f"{turn.ratio(route):.2f}"]
        cells += [f"{turn.raw_batch1_p50_ms:.2f}", f"{turn.service_c1_p50_ms:.2f}", f"{turn.gap_ms:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]
