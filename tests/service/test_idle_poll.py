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
    """A clock the test moves by hand, which counts the poll's turns (each reads it once), and the ``busy`` flag."""

    def __init__(self) -> None:
        self.now = 0.0
        self.turns = 0
        self.in_flight = False

    def clock(self) -> float:
        self.turns += 1
        return self.now

    def busy(self) -> bool:
        return self.in_flight


async def loop_turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def poll_with(probe: Probe) -> IdlePoll:
    return IdlePoll(asyncio.get_running_loop(), WINDOW_S, probe.busy, clock=probe.clock)


async def test_the_loop_polls_every_turn_until_the_window_ends_then_stops() -> None:
    probe = Probe()
    poll_with(probe).start()
    await loop_turns(TURNS)
    assert TURNS <= probe.turns <= TURNS + 1  # one turn of the poll per turn of the loop: it never slept
    probe.now = WINDOW_S  # the window is over
    await loop_turns(1)
    stopped_at = probe.turns
    await loop_turns(TURNS)
    assert probe.turns == stopped_at


async def test_a_request_in_flight_stops_the_poll_at_its_next_turn() -> None:
    probe = Probe()
    poll_with(probe).start()
    await loop_turns(2)
    probe.in_flight = True
    await loop_turns(1)
    stopped_at = probe.turns
    await loop_turns(TURNS)
    assert probe.turns == stopped_at
    assert probe.now < WINDOW_S  # stopped by the request, not by the clock


async def test_going_idle_again_while_polling_extends_the_window_without_a_second_poll() -> None:
    probe = Probe()
    poll = poll_with(probe)
    poll.start()
    await loop_turns(1)
    probe.now = WINDOW_S * 0.9
    poll.start()  # idle again: the window now ends at 1.9 x WINDOW_S
    before = probe.turns
    probe.now = WINDOW_S * 1.5  # past the first window, inside the second
    await loop_turns(TURNS)
    assert TURNS <= probe.turns - before <= TURNS + 1  # still polling, and once per turn
    probe.now = WINDOW_S * 2
    await loop_turns(1)
    stopped_at = probe.turns
    await loop_turns(TURNS)
    assert probe.turns == stopped_at


async def test_a_poll_that_stopped_starts_again_on_the_next_idle() -> None:
    probe = Probe()
    poll = poll_with(probe)
    poll.start()
    probe.now = WINDOW_S
    await loop_turns(2)
    stopped_at = probe.turns
    poll.start()
    await loop_turns(TURNS)
    assert probe.turns - stopped_at >= TURNS


def test_the_policy_reports_idle_when_its_last_request_is_answered_only() -> None:
    policy = InflightLimit(0)
    idles: list[int] = []
    policy.on_idle = lambda: idles.append(policy.inflight)
    assert policy.admit()
    assert policy.admit()
    assert policy.busy()
    policy.release()
    assert idles == []
    policy.release()
    assert idles == [0]
    assert not policy.busy()
