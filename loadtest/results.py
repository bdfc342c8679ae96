"""The report of a sweep as typed values: each step's load, latencies, generator costs, and the sweep around them.

The runner builds these, the table and the plot read them (the server's part is ``loadtest.prom.ServerView``).
Only ``to_dict``/``from_dict`` know the JSON layout that ``python -m loadtest --json`` writes and ``--show``
reads back, so saved reports keep loading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from loadtest.prom import ServerView
from loadtest.stats import LatencySummary

Arrival = Literal["poisson", "constant"]
#: A sweep's record of its own knobs (``Plan``'s fields as JSON scalars); nothing reads them back.
Settings = dict[str, str | int | float | None]


@dataclass(frozen=True)
class ClosedLoad:
    """A closed-loop step: this many users, each sending again as soon as it is answered."""

    concurrency: int

    @property
    def level(self) -> float:
        """The step's place on the sweep's axis."""
        return self.concurrency

    @property
    def label(self) -> str:
        return f"c={self.concurrency}"

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency}


@dataclass(frozen=True)
class OpenLoad:
    """An open-loop step: requests scheduled at this rate, whatever the server does."""

    rate_per_s: float
    arrival: Arrival

    @property
    def level(self) -> float:
        """The step's place on the sweep's axis."""
        return self.rate_per_s

    @property
    def label(self) -> str:
        return f"{self.rate_per_s:g}/s {self.arrival}"

    def to_dict(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate_per_s, "arrival": self.arrival}


Load = ClosedLoad | OpenLoad


def load_from_dict(data: dict[str, Any]) -> Load:
    """A step's ``load`` entry: ``{"concurrency": n}`` or ``{"rate_per_s": r, "arrival": a}``."""
    if "concurrency" in data:
        return ClosedLoad(data["concurrency"])
    return OpenLoad(data["rate_per_s"], data["arrival"])


@dataclass(frozen=True)
class Latency:
    """The client's latencies of a step's successes, from their scheduled time (nearest-rank percentiles)."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float

    @classmethod
    def of(cls, summary: LatencySummary) -> Latency:
        """``summary`` (seconds) in milliseconds."""
        percentiles_ms = {p: 1e3 * s for p, s in summary.percentiles_s.items()}
        return cls(
            p50_ms=percentiles_ms[50.0],
            p90_ms=percentiles_ms[90.0],
            p99_ms=percentiles_ms[99.0],
            p999_ms=percentiles_ms[99.9],
            mean_ms=1e3 * summary.mean_s,
            max_ms=1e3 * summary.max_s,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "p99.9": self.p999_ms,
            "mean": self.mean_ms,
            "max": self.max_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Latency:
        return cls(data["p50"], data["p90"], data["p99"], data["p99.9"], data["mean"], data["max"])


@dataclass(frozen=True)
class ServerProcess:
    """A local server process's CPU use over a step (100 % = one core), children (workers) included."""

    pid: int | None
    cpu_percent: float


@dataclass(frozen=True)
class GeneratorView:
    """What the load generator itself cost and how well it kept its schedule: was it the bottleneck?"""

    cpu_percent: float
    connections: int
    send_lag_mean_ms: float
    send_lag_max_ms: float
    max_backlog: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_percent": self.cpu_percent,
            "connections": self.connections,
            "send_lag_ms": {"mean": self.send_lag_mean_ms, "max": self.send_lag_max_ms},
            "max_backlog": self.max_backlog,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorView:
        lag = data["send_lag_ms"]
        return cls(data["cpu_percent"], data["connections"], lag["mean"], lag["max"], data["max_backlog"])


@dataclass(frozen=True)
class StepReport:
    """One load level of a sweep: the client's figures, the generator's costs, the server's view, warnings.

    Throughput counts the successes answered inside the measurement window, latencies those of the requests
    scheduled in it (see ``loadtest.load_loop``).
    """

    load: Load
    requests: int
    ok: int
    errors: dict[str, int]  # count by outcome other than 2xx: "429", "timeout", "connect_failed", …
    window_s: float
    span_s: float
    throughput_rps: float
    images_per_s: float
    latency: Latency | None  # None when no request succeeded
    generator: GeneratorView
    server: ServerView | None
    server_process: ServerProcess | None
    warnings: tuple[str, ...]
    offered_rps: float | None = None  # open loop: requests of the window put on the wire, per second of it
    failure: str | None = None  # why the step does not measure what was asked (then the run exits non-zero)

    def to_dict(self) -> dict[str, Any]:
        optional = {"offered_rps": self.offered_rps, "failure": self.failure}  # when set: older reports round-trip
        return {
            "load": self.load.to_dict(),
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "window_s": self.window_s,
            "span_s": self.span_s,
            "throughput_rps": self.throughput_rps,
            "images_per_s": self.images_per_s,
            "latency_ms": None if self.latency is None else self.latency.to_dict(),
            "generator": self.generator.to_dict(),
            "server": None if self.server is None else self.server.to_dict(),
            "server_process": None if self.server_process is None else asdict(self.server_process),
            "warnings": list(self.warnings),
            **{key: value for key, value in optional.items() if value is not None},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepReport:
        latency, server, process = data["latency_ms"], data["server"], data["server_process"]
        return cls(
            load=load_from_dict(data["load"]),
            requests=data["requests"],
            ok=data["ok"],
            errors=dict(data["errors"]),
            window_s=data["window_s"],
            span_s=data["span_s"],
            throughput_rps=data["throughput_rps"],
            images_per_s=data["images_per_s"],
            latency=None if latency is None else Latency.from_dict(latency),
            generator=GeneratorView.from_dict(data["generator"]),
            server=None if server is None else ServerView.from_dict(server),
            server_process=None if process is None else ServerProcess(**process),
            warnings=tuple(data["warnings"]),
            offered_rps=data.get("offered_rps"),
            failure=data.get("failure"),
        )


@dataclass(frozen=True)
class Target:
    """What was loaded: the server, the model, and the requests sent to it."""

    url: str
    model: str
    workload: str  # the workload's description, e.g. "v2 binary tensors, 1 row(s)/request"
    images_per_request: int
    body_bytes: int


@dataclass(frozen=True)
class SweepReport:
    """A whole sweep, as ``python -m loadtest`` prints it and writes it to JSON."""

    tool: str
    version: str
    started_at: str  # ISO 8601, UTC
    target: Target
    settings: Settings
    steps: tuple[StepReport, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "version": self.version,
            "started_at": self.started_at,
            "target": asdict(self.target),
            "settings": dict(self.settings),
            "steps": [step.to_dict() for step in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepReport:
        return cls(
            tool=data["tool"],
            version=data["version"],
            started_at=data["started_at"],
            target=Target(**data["target"]),
            settings=dict(data["settings"]),
            steps=tuple(StepReport.from_dict(step) for step in data["steps"]),
        )
