"""The ceiling a Python server can reach on this path: a bare ASGI app, no framework and no batching, ORT inline.

Run: ``BASELINE_MODEL_DIR=models/lenet5_digits uvicorn bench.bare_app:app --lifespan off --workers N``, one worker per
CPU (``bench.servers.bare``). It answers v2 binary tensor requests only: it reads the body, takes the tensor after
the JSON header (``Inference-Header-Content-Length``), runs the session on the event loop and returns the raw
output bytes. Nothing is checked; it is a reference for the request path's cost, not a server anyone should run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

_model_dir = Path(os.environ["BASELINE_MODEL_DIR"])
_config = json.loads((_model_dir / "config.json").read_text())
_options = ort.SessionOptions()
_options.intra_op_num_threads = 1  # one worker per CPU: each session keeps to its own
_session = ort.InferenceSession(str(_model_dir / "1" / "model.onnx"), _options, providers=["CPUExecutionProvider"])
_input = _config["input"][0]["name"]
_dims = tuple(_config["input"][0]["dims"])
_OK = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/octet-stream")],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST ``/v2/models/{m}/infer`` (binary tensor extension); any GET answers 200 (readiness), the rest 404."""
    if scope["method"] != "POST" or not scope["path"].endswith("/infer"):
        await send({"type": "http.response.start", "status": 200 if scope["method"] == "GET" else 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    header_length = next(int(v) for k, v in scope["headers"] if k == b"inference-header-content-length")
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    x = np.frombuffer(body, np.float32, offset=header_length).reshape(-1, *_dims)
    logits = _session.run(None, {_input: x})[0]
    await send(_OK)
    await send({"type": "http.response.body", "body": logits.tobytes()})
