"""cnnserve's export pipeline: PyTorch CNN → shape-checked, parity-checked ONNX in a model repository.

``service`` is imported first: it turns ONNX Runtime's telemetry off before anything here imports ``onnxruntime``
(see ``service/__init__.py``).
"""

import service  # noqa: F401  (for its side effect: ORT_DISABLE_TELEMETRY)
