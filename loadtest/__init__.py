"""cnnserve's load-testing harness: closed- and open-loop load over HTTP or KServe v2 gRPC against a deployment,
with latency reports.

Run ``python -m loadtest --help``; ``loadtest.runner.run_sweep`` is the same harness as a library (the benchmark
suite in ``bench/`` drives it this way).
"""

from __future__ import annotations

__version__ = "0.1.0"
