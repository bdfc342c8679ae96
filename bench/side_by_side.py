"""Start the service and its reference servers side by side, and measure the model's comparisons in turns
(``bench.pairs``).

Every server idles while another is measured; none of them spends CPU then (ORT's spinning threads stop spinning
a few milliseconds after their last run, and the service's idle poll after 200 us), so running them together costs
the measured server nothing.
"""

from __future__ import annotations

from contextlib import ExitStack

from bench import context, pairs, suite
from bench.kinds import Route, ServerKind
from loadtest.results import StepReport


def measure(ctx: context.Context, model: str) -> tuple[pairs.Pairing, ...]:
    """The comparisons ``pairs.PAIRINGS`` lists for ``model``, in turns; none for a model without any, when a
    server they need is not in this run, or when the time budget has no room for the warm-up and one round."""
    specs = tuple(spec for spec in pairs.PAIRINGS.get(model, ()) if {"service", spec[0]} <= set(ctx.kinds))
    profile = ctx.profile
    need = 2 * len(specs) * profile.load_step_s  # a round's time; the warm-up takes as long
    kinds: tuple[ServerKind, ...] = tuple(dict.fromkeys(("service", *(spec[0] for spec in specs))))
    if not specs or ctx.time_left() < 2 * need + suite.MIN_SERVER_S * len(kinds):
        if specs:
            ctx.skipped.append(f"{model} comparisons in turns: the time budget is spent ({ctx.time_left():.0f} s left)")
        return ()
    context.say(f"[{model}] the service and the reference servers in turns")
    with ExitStack() as running:
        started = {kind: suite.start_server(ctx, kind, model, "-in-turns") for kind in kinds}
        for kind, server in started.items():
            running.callback(suite.stop_server, ctx, server, f"{model} {kind} in turns")
        sent = {kind: suite.routes_of(ctx, kind, server, model) for kind, server in started.items()}

        def step(kind: ServerKind, route: Route, users: int) -> StepReport:
            return suite.one_step(ctx, started[kind], model, sent[kind][route], users)

        taken = pairs.take_pairs(profile.turn_rounds, specs, step, lambda: ctx.time_left() > need)
    rounds = len(taken[0].service) if taken else 0
    if rounds < profile.turn_rounds:
        ctx.skipped.append(f"{model} comparisons in turns: {rounds} of {profile.turn_rounds} rounds fitted the budget")
    return taken
