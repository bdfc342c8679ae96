"""The event loop's poll after the last answer (``service.idle_poll``): how long it lasts and what stops it.

The latency it buys is measured in the bench, not here (docs/benchmarks.md); these tests hold the clock still and
count the loop's turns, so they do not depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio

from service.admission import InflightLimit
from service.idle_poll import IdlePoll

WINDOW_S = 0.001
TURNS = 5


class Probe:
    """A clock the test moves by hand, which counts the poll's turns (each reads it once)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.turns = 0

    def clock(self) -> float:
        self.turns += 1
        return self.now


async def loop_turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def stopped(probe: Probe) -> bool:
    """Whether the poll stops within one more loop turn: no turns of it in the next ``TURNS``."""
    await loop_turns(1)
    stopped_at = probe.turns
    await loop_turns(TURNS)
    return probe.turns == stopped_at


def poll_with(probe: Probe) -> IdlePoll:
    return IdlePoll(asyncio.get_running_loop(), WINDOW_S, clock=probe.clock)


async def test_the_loop_polls_every_turn_until_the_window_ends_then_stops() -> None:
    probe = Probe()
    poll_with(probe).idle()
    await loop_turns(TURNS)
    assert TURNS <= probe.turns <= TURNS + 1  # one turn of the poll per turn of the loop: it never slept
    probe.now = WINDOW_S  # the window is over
    assert await stopped(probe)


async def test_a_request_in_flight_stops_the_poll_at_its_next_turn() -> None:
    probe = Probe()
    poll = poll_with(probe)
    poll.idle()
    await loop_turns(2)
    poll.busy()
    assert await stopped(probe)
    assert probe.now < WINDOW_S  # stopped by the request, not by the clock


async def test_going_idle_again_while_polling_extends_the_window_without_a_second_poll() -> None:
    probe = Probe()
    poll = poll_with(probe)
    poll.idle()
    await loop_turns(1)
    probe.now = WINDOW_S * 0.9
    poll.idle()  # idle again: the window now ends at 1.9 x WINDOW_S
    before = probe.turns
    probe.now = WINDOW_S * 1.5  # past the first window, inside the second
    await loop_turns(TURNS)
    assert TURNS <= probe.turns - before <= TURNS + 1  # still polling, and once per turn
    probe.now = WINDOW_S * 2
    assert await stopped(probe)


async def test_a_poll_that_stopped_starts_again_on_the_next_idle() -> None:
    probe = Probe()
    poll = poll_with(probe)
    poll.idle()
    probe.now = WINDOW_S
    await loop_turns(2)
    stopped_at = probe.turns
    poll.idle()
    await loop_turns(TURNS)
    assert probe.turns - stopped_at >= TURNS


class Watcher:
    """An ``InflightWatcher`` noting what it was told, with the count at that moment."""

    def __init__(self, policy: InflightLimit) -> None:
        self.policy = policy
        self.told: list[tuple[str, int]] = []

    def busy(self) -> None:
        self.told.append(("busy", self.policy.inflight))

    def idle(self) -> None:
        self.told.append(("idle", self.policy.inflight))


def test_the_policy_tells_its_watchers_when_its_count_leaves_zero_and_returns_only() -> None:
    policy = InflightLimit(2)
    watchers = [Watcher(policy), Watcher(policy)]
    policy.watchers.extend(watchers)
    assert policy.admit()
    assert policy.admit()
    assert not policy.admit()  # refused: counts nothing, tells nobody
    policy.release()
    policy.release()
    assert policy.admit()
    for watcher in watchers:
        assert watcher.told == [("busy", 1), ("idle", 0), ("busy", 1)]
