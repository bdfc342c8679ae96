"""Where the integration tests hold a batch: every way the batcher runs one on a worker thread, in one place.

``gated_service`` (a gate file, for a server in a subprocess) and ``inprocess_server.ModelGate`` (an event, for a
server in the test process) both put their wait in front of these, so a new worker-thread path is gated by both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy.typing as npt

from service.runtime import ModelRunner

RunMethod = Callable[[ModelRunner, int, Mapping[str, npt.NDArray[Any]]], dict[str, npt.NDArray[Any]]]
#: The ``ModelRunner`` methods the batcher runs threaded batches through: ``run_batch``, and ``run_lone`` for a lone
#: request.
THREADED_RUNS = ("__call__", "run_lone")


def gated_runs(wait: Callable[[], None]) -> dict[str, RunMethod]:
    """Each of ``THREADED_RUNS``, by name, calling ``wait()`` before it runs."""

    def waiting(real: RunMethod) -> RunMethod:
        def run(runner: ModelRunner, instance: int, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
            wait()
            return real(runner, instance, inputs)

        return run

    return {name: waiting(getattr(ModelRunner, name)) for name in THREADED_RUNS}
