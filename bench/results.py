"""The suite's results as typed values: per model, raw ORT and each server's sweeps; the run around them; the bars.

``bench.suite`` and ``bench.run`` build these, ``bench.bars`` and ``bench.report`` read them, and ``to_dict``
gives ``results.json``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bench.client_cost import ClientCost
from bench.int8 import Int8Result
from bench.kinds import Route, ServerKind
from bench.machine import Machine
from bench.pairs import Pairing, median_index
from bench.preprocess_bench import PreprocessResult
from bench.raw_ort import RawOrt
from loadtest.results import ClosedLoad, StepReport, SweepReport


@dataclass(frozen=True)
class Turn:
    """One round: raw ORT's best and the service's peaks, then raw batch 1 and the service at concurrency 1."""

    raw_images_per_s: float
    service_images_per_s: dict[Route, float]
    raw_batch1_p50_ms: float
    service_c1_p50_ms: float

    def ratio(self, route: Route) -> float:
        """The service's images/s on ``route`` over raw ORT's, in this round."""
        return self.service_images_per_s[route] / self.raw_images_per_s

    @property
    def gap_ms(self) -> float:
        """The service's p50 at concurrency 1 minus raw ORT's batch-1 p50, in this round."""
        return self.service_c1_p50_ms - self.raw_batch1_p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw_images_per_s": self.raw_images_per_s,
            "service_images_per_s": self.service_images_per_s,
            "raw_batch1_p50_ms": self.raw_batch1_p50_ms,
            "service_c1_p50_ms": self.service_c1_p50_ms,
        }


@dataclass(frozen=True)
class Turns:
    """The service and raw ORT measured in turns (``bench.turns``): every round, and what each side ran (raw ORT's
    setting and batch, the service's concurrency per route)."""

    raw_setting: str
    raw_batch: int
    raw_batch1_setting: str
    concurrency: dict[Route, int]
    rounds: tuple[Turn, ...]

    def ratios(self, route: Route) -> list[float]:
        """Service images/s over raw ORT's, round by round."""
        return [turn.ratio(route) for turn in self.rounds]

    def ratio(self, route: Route) -> float:
        """The median of the rounds' ratios."""
        return statistics.median(self.ratios(route))

    def median_round(self, route: Route) -> Turn:
        """The round whose ratio on ``route`` is the median (``median_index``)."""
        return self.rounds[median_index(self.ratios(route))]

    def gaps_ms(self) -> list[float]:
        """The service's p50 at concurrency 1 minus raw ORT's batch-1 p50, round by round."""
        return [turn.gap_ms for turn in self.rounds]

    def gap_ms(self) -> float:
        """The median of the rounds' gaps."""
        return statistics.median(self.gaps_ms())

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw_setting": self.raw_setting,
            "raw_batch": self.raw_batch,
            "raw_batch1_setting": self.raw_batch1_setting,
            "concurrency": self.concurrency,
            "rounds": [turn.to_dict() for turn in self.rounds],
        }


@dataclass(frozen=True)
class ServerRuns:
    """One server's sweeps, by route (a route left out did not fit the time budget), and its memory afterwards.

    ``memory_mib`` is the resident memory of each of the server's processes (the first is the one started: a
    supervisor when there are workers), so the cost of every extra worker shows.
    """

    sweeps: dict[Route, SweepReport]
    memory_mib: list[float]
    turns: Turns | None = None  # the service against raw ORT in turns, for a model whose bars divide by raw ORT

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "memory_mib": self.memory_mib,
            **{route: sweep.to_dict() for route, sweep in self.sweeps.items()},
        }
        if self.turns is not None:
            data["turns"] = self.turns.to_dict()
        return data


@dataclass(frozen=True)
class ModelResult:
    """One model: its raw ONNX Runtime limit and every server kind's sweeps (None: skipped for time)."""

    raw: RawOrt
    servers: dict[ServerKind, ServerRuns | None]
    pairs: tuple[Pairing, ...] = ()  # the service and a reference server in turns, for a model in ``PAIRINGS``

    def steps(self, kind: ServerKind, route: Route) -> list[StepReport]:
        """The steps of one sweep that completed requests (empty when the sweep did not run)."""
        runs = self.servers.get(kind)
        sweep = runs.sweeps.get(route) if runs else None
        return [step for step in sweep.steps if step.ok] if sweep else []

    def peak(self, kind: ServerKind, route: Route) -> StepReport | None:
        """The step of a sweep with the most images/s."""
        steps = self.steps(kind, route)
        return max(steps, key=lambda step: step.images_per_s) if steps else None

    def at(self, kind: ServerKind, route: Route, concurrency: int) -> StepReport | None:
        """The step of a sweep at ``concurrency`` users, if it completed requests."""
        return next((step for step in self.steps(kind, route) if step.load == ClosedLoad(concurrency)), None)

    def to_dict(self) -> dict[str, Any]:
        servers = {kind: runs.to_dict() if runs else {} for kind, runs in self.servers.items()}
        data: dict[str, Any] = {"raw": self.raw.to_dict(), "servers": servers}
        if self.pairs:
            data["pairs"] = [pairing.to_dict() for pairing in self.pairs]
        return data


@dataclass(frozen=True)
class Bar:
    """One performance bar: the figures behind it, the ratio, and whether it holds (None: not measured)."""

    name: str
    measured: str
    target: str
    ratio: float | None
    met: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bar": self.name,
            "measured": self.measured,
            "target": self.target,
            "ratio": self.ratio,
            "met": self.met,
        }


@dataclass(frozen=True)
class Pinning:
    """The CPUs the servers (and raw ORT) and the load generator ran on, or "all"."""

    server_cpus: list[int] | Literal["all"]
    client_cpus: list[int] | Literal["all"]


@dataclass(frozen=True)
class BenchResults:
    """One run of the suite: what ran where, every measurement, what was skipped, and the bars."""

    command: str
    profile: str
    started_at: str  # ISO 8601, UTC
    machine: Machine
    pinning: Pinning
    preprocess: PreprocessResult
    client_cost: ClientCost | None
    models: dict[str, ModelResult]
    skipped: list[str]
    elapsed_s: float
    bars: tuple[Bar, ...]
    int8: tuple[Int8Result, ...] = ()  # FP32 against INT8 in raw ORT, per model (bench.int8)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "profile": self.profile,
            "started_at": self.started_at,
            "machine": asdict(self.machine),
            "pinning": asdict(self.pinning),
            "preprocess": asdict(self.preprocess),
            "client_cost": self.client_cost.to_dict() if self.client_cost else None,
            "models": {model: result.to_dict() for model, result in self.models.items()},
            "skipped": self.skipped,
            "elapsed_s": self.elapsed_s,
            "bars": [bar.to_dict() for bar in self.bars],
            "int8": [result.to_dict() for result in self.int8],
        }
