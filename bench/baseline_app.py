"""The obvious alternative, as a user would write it: FastAPI + one ONNX Runtime session, no batching.

Run: ``BASELINE_MODEL_DIR=models/lenet5_digits uvicorn bench.baseline_app:app --port 8001``. It answers the same
v2 binary tensor requests and raw-image REST requests as cnnserve, so one client and one payload drive both.
"""

import io
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request, Response
from PIL import Image

model_dir = os.environ["BASELINE_MODEL_DIR"]
config = json.loads(Path(model_dir, "config.json").read_text())
session = ort.InferenceSession(f"{model_dir}/1/model.onnx", providers=["CPUExecutionProvider"])
name, dims, pre = config["input"][0]["name"], config["input"][0]["dims"], config["preprocessing"]
app = FastAPI()


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request) -> Response:
    body = await request.body()  # v2 binary: JSON header, then the raw float32 tensor
    x = np.frombuffer(body[int(request.headers["inference-header-content-length"]) :], np.float32)
    logits = session.run(None, {name: x.reshape(-1, *dims)})[0]
    return Response(logits.tobytes(), media_type="application/octet-stream")


@app.post("/v1/models/{model}/classify")
async def classify(model: str, request: Request) -> dict:
    image = Image.open(io.BytesIO(await request.body())).convert(pre["color_mode"])
    scale = pre["resize"] / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    (h, w), left, top = pre["crop"], (image.width - pre["crop"][1]) // 2, (image.height - pre["crop"][0]) // 2
    pixels = np.asarray(image.crop((left, top, left + w, top + h)), np.float32).reshape(h, w, -1) / 255
    x = ((pixels - pre["mean"]) / pre["std"]).transpose(2, 0, 1)[None].astype(np.float32)
    logits = session.run(None, {name: x})[0][0]
    scores = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    return {"predictions": [{"index": int(i), "score": float(scores[i])} for i in np.argsort(-scores)[:5]]}
