"""The raw outcome of one measured step, as a load loop records it (``loadtest.load_loop``) and merges it
(``loadtest.processes``); ``loadtest.report`` turns it into the step's report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StepResult:
    """Raw outcome of one measured step: success latencies, outcomes by status, generator costs."""

    latencies_s: list[float] = field(default_factory=list)  # successes among the requests scheduled in the window
    outcomes: Counter[str] = field(default_factory=Counter)  # "200", "429", "timeout", "connect_failed", …
    window_s: float = 0.0  # the measurement window: from its start until issuing stopped (duration or request cap)
    window_ok: int = 0  # successes completed inside the window, whenever sent: the throughput's numerator
    span_s: float = 0.0  # window start until every request sent in it was answered (the window plus the drain)
    cpu_s: float = 0.0  # generator process CPU time over the span
    lag_sum_s: float = 0.0  # open loop: how late requests were sent after their scheduled time
    lag_max_s: float = 0.0
    sent: int = 0
    max_backlog: int = 0
    connections: int = 0
    failures: list[str] = field(default_factory=list)  # the generator's own: a task of it that died, and why
    processes: int = 1  # generator processes merged into this result (``loadtest.processes``)

    @property
    def completed(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok(self) -> int:
        return len(self.latencies_s)
