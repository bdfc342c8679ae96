"""What every part of a bench run shares: how long each measurement runs, where results go, which CPUs do what,
and the clock of the run's time budget."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.kinds import ServerKind

#: The plain FastAPI endpoint, the bare ASGI ceiling, and the service at its default settings: only those, since a
#: tuned profile that beat the default would mean the default is wrong.
SERVERS: tuple[ServerKind, ...] = ("baseline", "bare", "service")


@dataclass(frozen=True)
class Profile:
    """How long each measurement runs; ``budget_s`` bounds the whole suite."""

    name: str
    step_s: float
    warmup_s: float
    raw_point_s: float
    preprocess_s: float
    client_cost_requests: int
    budget_s: float
    raw_min_runs: int
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    turn_rounds: int = 3  # rounds of the service against raw ORT in turns (bench.turns)
    int8_runs: int = 10  # timed runs of each model in the FP32-against-INT8 comparison (bench.int8)

    @property
    def load_step_s(self) -> float:
        """What one load step takes, to check the time budget: its warm-up, its measurement, and about a second of
        setting up and winding down."""
        return self.warmup_s + self.step_s + 1.0


QUICK = Profile("quick", 0.6, 0.15, 0.2, 1.0, 600, 240.0, 2)
FULL = Profile("full", 3.0, 0.8, 1.0, 3.0, 4000, 900.0, 3, int8_runs=20, turn_rounds=5)


@dataclass
class Context:
    """What every part of a run shares: where things go, which CPUs do what, and the clock."""

    profile: Profile
    out: Path
    repository: Path
    server_cpus: set[int] | None
    client_cpus: set[int] | None
    kinds: tuple[ServerKind, ...] = SERVERS
    started: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    def time_left(self) -> float:
        return self.profile.budget_s - (time.monotonic() - self.started)

    def affinity(self, cpus: set[int] | None) -> None:
        """Run this (bench) process on ``cpus`` from now on; None leaves it alone."""
        if cpus:
            os.sched_setaffinity(0, cpus)


_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line, stamped with seconds since the suite started."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", flush=True)
