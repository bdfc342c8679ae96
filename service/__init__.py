"""cnnserve's serving core: FastAPI + dynamic batching over ONNX Runtime. Run with ``python -m service``.

Importing this package turns ONNX Runtime's usage telemetry off (``ORT_DISABLE_TELEMETRY=1``) unless the environment
already says otherwise. ONNX Runtime 1.31's Linux wheels resolve and call ``mobile.events.data.microsoft.com`` from a
background thread of every process that creates a session, starting about 9 s in; only the variable, set before
``onnxruntime`` is first imported, stops it (``onnxruntime.disable_telemetry_events()`` does not). An inference
server must not reach out to third parties on its own. ``export`` and ``bench`` import this package first for the
same reason; ``ORT_DISABLE_TELEMETRY=0`` turns it back on.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

try:
    __version__ = version("cnnserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
