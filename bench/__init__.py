"""cnnserve's benchmark suite: raw ONNX Runtime vs a plain FastAPI endpoint vs the service, in one run.

Run ``python -m bench --quick`` (about 3 minutes) or ``python -m bench --full`` (about 13); results land in
``reports/bench/`` and the Markdown table is copied to ``bench/RESULTS.md``. Not part of the test suite.
"""

import service  # noqa: F401  (first: it turns ONNX Runtime's telemetry off, see service/__init__.py)
