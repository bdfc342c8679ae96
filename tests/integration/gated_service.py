"""``python -m service`` with a gate in front of the model, for tests that must hold batches in a real process.

``start_gated_server`` runs this module as ``python -m gated_service GATE <service flags>``: the service starts as
``python -m service`` would (same ``main``, same signal handling and exit code), except that while the file GATE
exists every batch run on a worker thread waits before it runs; at most ``HOLD_LIMIT_S``, after which the batch
fails (its requests answer 500) and says so in the log. Create GATE once the server is ready (the warm-up runs
through the same path), remove it to let the held batches go. A file rather than an event: the test is another
process. Give the server ``CNNSERVE_INLINE_BATCH_US=0`` so that no batch runs on the event loop, around the gate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from runner_gate import gated_runs

from bench.servers import Server, start
from service.__main__ import main
from service.runtime import ModelRunner

HERE = Path(__file__).resolve().parent
HOLD_LIMIT_S = 30.0


def install_gate(gate: Path) -> None:
    """Make every batch run on a worker thread (``runner_gate.THREADED_RUNS``) wait while ``gate`` exists."""

    def wait() -> None:
        deadline = time.monotonic() + HOLD_LIMIT_S
        while gate.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"a batch was held at the model gate {gate} for {HOLD_LIMIT_S} s")
            time.sleep(0.002)

    for name, run in gated_runs(wait).items():
        setattr(ModelRunner, name, run)


def start_gated_server(repository: Path, log_path: Path, gate: Path, **settings: str) -> Server:
    """Start the gated service serving ``repository`` with ``CNNSERVE_<KEY>`` settings; wait until it is ready.

    A startup that fails (the process exited, or was not ready in time) fails the test, quoting the log's tail.
    """
    command = [sys.executable, "-m", "gated_service", str(gate), "--port", "{port}", "--grpc-port", "{grpc_port}"]
    command += ["--repository", str(repository)]
    settings.setdefault("workers", "1")  # the gate is patched into this one process
    env = {"PYTHONPATH": str(HERE)} | {f"CNNSERVE_{key.upper()}": value for key, value in settings.items()}
    try:
        return start("gated service", command, env, "/v2/health/ready", log_path, cpus=None)
    except RuntimeError as err:  # startup failed: the message quotes the log's tail
        pytest.fail(str(err))


if __name__ == "__main__":
    install_gate(Path(sys.argv[1]))
    main(sys.argv[2:])
