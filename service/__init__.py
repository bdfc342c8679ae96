"""cnnserve's serving core: FastAPI + dynamic batching over ONNX Runtime. Run with ``python -m service``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
