"""One step's load from several generator processes, merged into one result, for when one core cannot offer it.

One Python process sends a few thousand requests a second at most; a multi-worker server on a bigger machine
takes more, and a saturated generator measures itself (``report`` warns at 90 % of a core). With ``--processes N``
the step's load is shared out: each process runs the same loop on its share (a concurrency split in whole users, a
rate split evenly with its own Poisson seed, the connection pool split too), they warm up, and they open their
measurement windows together when this process says so, after it scraped the server; their results are merged
(latencies pooled, counts added, the window the longest) and reported as one step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
from collections import Counter
from collections.abc import Awaitable, Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import uvloop

from loadtest.closed_loop import ClosedLoop
from loadtest.load_loop import LoadLoop
from loadtest.open_loop import OpenLoop
from loadtest.payloads import Workload
from loadtest.results import ClosedLoad, Load, OpenLoad
from loadtest.step_result import StepResult
from loadtest.transport import Transport

#: Children are spawned, not forked: a fork would copy this process's running event loop.
_CONTEXT = multiprocessing.get_context("spawn")


@dataclasses.dataclass(frozen=True)
class Share:
    """One generator process's part of a step."""

    load: Load
    max_connections: int
    max_requests: int
    seed: int


def shares(load: Load, processes: int, max_connections: int, max_requests: int, seed: int) -> list[Share]:
    """``load`` split among at most ``processes`` (fewer when a concurrency has fewer users than processes), with
    the connection pool and the request cap split alike."""
    if isinstance(load, ClosedLoad):
        users = [load.concurrency // processes + (i < load.concurrency % processes) for i in range(processes)]
        parts: list[Load] = [ClosedLoad(n) for n in users if n]
    else:
        parts = [OpenLoad(load.rate_per_s / processes, load.arrival)] * processes
    pool, cap = max(1, max_connections // len(parts)), max(1, max_requests // len(parts))
    return [Share(part, pool, cap, seed + i) for i, part in enumerate(parts)]


def merge(results: list[StepResult]) -> StepResult:
    """One step's result from its processes' results: latencies pooled, counts and CPU added, longest window."""
    merged = StepResult(outcomes=Counter(), processes=len(results))
    for result in results:
        merged.latencies_s += result.latencies_s
        merged.outcomes.update(result.outcomes)
        merged.failures += result.failures
        merged.window_ok += result.window_ok
        merged.cpu_s += result.cpu_s
        merged.lag_sum_s += result.lag_sum_s
        merged.sent += result.sent
        merged.max_backlog += result.max_backlog
        merged.connections += result.connections
        merged.window_s = max(merged.window_s, result.window_s)
        merged.span_s = max(merged.span_s, result.span_s)
        merged.lag_max_s = max(merged.lag_max_s, result.lag_max_s)
    return merged


@dataclasses.dataclass(frozen=True)
class Step:
    """What every process of a step shares: where to send what, and the bounds."""

    transport: Transport
    workload: Workload
    timeout_s: float
    warmup_s: float
    duration_s: float


async def run_shared(
    step: Step, parts: list[Share], between: Callable[[], Awaitable[None]], after: Callable[[], Awaitable[None]]
) -> StepResult:
    """Run ``parts`` in processes of their own; ``between`` runs once all are warm, just before their windows open,
    ``after`` once all have finished. Returns the merged result; a process that failed adds its failure to it.
    """
    warm: Queue[Any] = _CONTEXT.Queue()
    done: Queue[Any] = _CONTEXT.Queue()
    go = _CONTEXT.Event()
    children = [_CONTEXT.Process(target=_child, args=(step, part, warm, go, done), daemon=True) for part in parts]
    for child in children:
        child.start()
    loop = asyncio.get_running_loop()
    bound_s = step.warmup_s + step.duration_s + 4 * step.timeout_s + 30.0  # start-up and every bound of a step
    try:
        for _ in children:
            await loop.run_in_executor(None, warm.get, True, bound_s)
        await between()
        go.set()
        results = [await loop.run_in_executor(None, done.get, True, bound_s) for _ in children]
        await after()
    finally:
        go.set()  # a child still warming up must not wait for a signal that never comes
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    return merge(results)


def _child(step: Step, part: Share, warm: Queue[Any], go: Event, done: Queue[Any]) -> None:
    """A generator process: warm up, say so, open the window on ``go``, report the step's raw result."""
    said_warm: list[bool] = []
    try:
        result = uvloop.run(_child_step(step, part, warm, go, said_warm))
    except Exception as err:  # reported, never lost: the parent marks the step failed with it
        result = StepResult(failures=[f"generator process {part.seed} failed: {err!r}"])
        if not said_warm:
            warm.put(part.seed)  # the parent is waiting for every process to be warm
    done.put(result)


async def start_loop(step: Step, part: Share) -> tuple[LoadLoop, int]:
    """Start the loop ``part.load`` calls for; returns it with the answers its warm-up and window wait for."""
    if isinstance(part.load, ClosedLoad):
        users = ClosedLoop(step.transport, step.workload, step.timeout_s)
        await users.start(part.load.concurrency)
        return users, part.load.concurrency
    schedule = OpenLoop(step.transport, step.workload, step.timeout_s, part.max_connections)
    schedule.start(part.load.rate_per_s, part.load.arrival == "poisson", part.seed)
    return schedule, 0


async def _child_step(step: Step, part: Share, warm: Queue[Any], go: Event, said_warm: list[bool]) -> StepResult:
    driver, answers = await start_loop(step, part)
    await driver.warm_up(step.warmup_s, answers)
    warm.put(part.seed)
    said_warm.append(True)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    driver.measure(step.duration_s, part.max_requests, answers)
    return await driver.finish()
