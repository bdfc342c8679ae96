"""The service and a reference server measured in turns: how the bars that divide the service by another server are
taken.

The sweeps measure one server after another, minutes apart, and this machine's speed moves by more than the bars'
margins in that time: the bare ASGI app's LeNet-5 peak was 16.8k and 20.8k img/s in two runs of one session, and
one bar asks for 0.85 of it. So a bar that divides the service's figure by a reference server's (``PAIRINGS``) is
measured again with the two servers running side by side: each comparison is one step of the service and one of
the reference, right after each other, for the same time each; the order flips every round, so a drift in the
machine's speed favours neither side. Each round gives a ratio of neighbours, and the bar takes the median round.
Before the rounds every server takes one uncounted step of each comparison, so that what a server does only after
its start (ORT's memory arena growing to the batch sizes it meets, the first connections) lands in no round.

Knows nothing of how a step is run: ``bench.side_by_side`` hands in the way of measuring.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.kinds import ROUTE_NAMES, SERVER_NAMES, Route, ServerKind
from loadtest.results import StepReport

#: A comparison: the reference server, the route, and the concurrency at which both servers are measured.
Spec = tuple[ServerKind, Route, int]
#: ``measure(server, route, concurrency)``: one closed-loop step of that server.
Measure = Callable[[ServerKind, Route, int], StepReport]
#: The comparisons each model's bars make, measured in turns.
PAIRINGS: dict[str, tuple[Spec, ...]] = {
    "lenet5_digits": (
        ("baseline", "tensor", 64),
        ("bare", "tensor", 64),
        ("baseline", "image", 64),
        ("baseline", "image", 1),
    ),
    "tiny_cnn": (("baseline", "tensor", 64), ("baseline", "tensor", 1)),
}


def figure(step: StepReport, concurrency: int) -> float:
    """What a comparison compares: the p50 in ms at concurrency 1 (a latency when idle), images/s otherwise.

    Raises:
        ValueError: the step completed no request, so there is nothing to compare.
    """
    if step.latency is None or not step.images_per_s:
        raise ValueError(f"a server answered nothing at {step.load.label}, so there is no figure to compare")
    return step.latency.p50_ms if concurrency == 1 else step.images_per_s


def median_index(values: list[float]) -> int:
    """The index of the median of ``values`` (the lower middle one of an even count): the round a bar shows."""
    ranked = sorted(range(len(values)), key=values.__getitem__)
    return ranked[(len(ranked) - 1) // 2]


@dataclass(frozen=True)
class Pairing:
    """One comparison measured in turns: the service's figure and the reference's, round by round."""

    reference: ServerKind
    route: Route
    concurrency: int
    service: tuple[float, ...]
    theirs: tuple[float, ...]

    @property
    def unit(self) -> str:
        return "p50 ms" if self.concurrency == 1 else "img/s"

    def ratios(self) -> list[float]:
        """The service's figure over the reference's, round by round."""
        return [ours / theirs for ours, theirs in zip(self.service, self.theirs, strict=True)]

    def ratio(self) -> float:
        """The median of the rounds' ratios."""
        return statistics.median(self.ratios())

    def median_round(self) -> int:
        """The index of the round whose ratio is the median (``median_index``)."""
        return median_index(self.ratios())

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "route": self.route,
            "concurrency": self.concurrency,
            "unit": self.unit,
            "service": list(self.service),
            "reference_figures": list(self.theirs),
        }


def take_pairs(
    rounds: int, specs: tuple[Spec, ...], measure: Measure, may_continue: Callable[[], bool]
) -> tuple[Pairing, ...]:
    """One uncounted step of each comparison on every server, then ``rounds`` rounds of every comparison: the
    service first in even rounds, the reference in odd ones.

    Args:
        rounds: How many rounds at most.
        specs: The comparisons, each measured once a round, in this order.
        measure: Runs one step of a server.
        may_continue: Asked before each round; False (the time budget is spent) ends the turns early.

    Returns:
        One ``Pairing`` per spec; none when no round ran.
    """
    figures: dict[Spec, dict[ServerKind, list[float]]] = {spec: {"service": [], spec[0]: []} for spec in specs}
    if may_continue():  # the warm-up
        for reference, route, users in specs:
            for kind in ("service", reference):
                measure(kind, route, users)
    for index in range(rounds):
        if not may_continue():
            break
        for spec in specs:
            reference, route, users = spec
            for kind in ("service", reference) if index % 2 == 0 else (reference, "service"):
                figures[spec][kind].append(figure(measure(kind, route, users), users))
    return tuple(
        Pairing(spec[0], spec[1], spec[2], tuple(figures[spec]["service"]), tuple(figures[spec][spec[0]]))
        for spec in specs
        if figures[spec]["service"]
    )


def find(pairings: tuple[Pairing, ...], spec: Spec) -> Pairing | None:
    """The pairing measured for ``spec``, if it was."""
    return next((p for p in pairings if (p.reference, p.route, p.concurrency) == spec), None)


def markdown(model: str, pairings: tuple[Pairing, ...]) -> list[str]:
    """The rounds in which the service and its reference servers took turns, as a section of the run's Markdown."""
    lines = [
        f"## The service and the reference servers in turns: {model}",
        "",
        "All servers running side by side; each row is one comparison, each round one step of the service and one of "
        "the reference, one right after the other, the service first in odd rounds. The bars take the median round.",
        "",
        "| comparison | unit | rounds: service / reference (ratio) | median ratio |",
        "|---|---|---|---|",
    ]
    for p in pairings:
        rounds = " · ".join(
            f"{ours:,.2f} / {theirs:,.2f} ({ours / theirs:.2f})" if p.concurrency == 1 else
            f"{ours:,.0f} / {theirs:,.0f} ({ours / theirs:.2f})"
            for ours, theirs in zip(p.service, p.theirs, strict=True)
        )  # fmt: skip
        name = f"{ROUTE_NAMES[p.route]} c={p.concurrency}: service / {SERVER_NAMES[p.reference]}"
        lines.append(f"| {name} | {p.unit} | {rounds} | {p.ratio():.2f} |")
    return [*lines, ""]
