"""Smoke requests against a running cnnserve (a container, usually): readiness, classification, v2, metrics, gRPC.

``.ci/container-smoke`` runs it against the image it built. It waits for readiness (bounded), classifies every
committed sample digit (``samples/digits/digit-<label>.png``) as a raw PNG body, once more enlarged 4x with
Pillow, checks the KServe v2 model metadata, then checks /metrics counted those requests; with ``--grpc``, it also
checks the gRPC health service and classifies a digit through ``tritonclient.grpc``. Exits non-zero on the first
failed expectation, printing what was expected.
Usage: ``python deploy/smoke_client.py --url http://127.0.0.1:PORT [--grpc 127.0.0.1:PORT] [--model M]``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "digits"
#: Of the 20 classifications (10 digits, original and enlarged), how many must name the right digit.
MIN_CORRECT = 18


class SmokeFailure(Exception):
    """An expectation the running service did not meet."""


def request(url: str, body: bytes | None = None, content_type: str = "", timeout_s: float = 10.0) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for every status, raising only when nothing answered."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(base: str, timeout_s: float) -> float:
    """Poll /v2/health/ready every 0.5 s until it answers 200; returns the seconds waited."""
    start = time.monotonic()
    last = "no answer"
    for _ in range(int(timeout_s / 0.5) + 1):
        try:
            status, _ = request(f"{base}/v2/health/ready", timeout_s=2.0)
            if status == 200:
                return time.monotonic() - start
            last = f"HTTP {status}"
        except OSError as err:  # connection refused or reset while the server starts
            last = str(err)
        time.sleep(0.5)
    raise SmokeFailure(f"/v2/health/ready not 200 within {timeout_s:.0f} s; last: {last}")


def top_label(payload: dict[str, Any], model: str) -> str:
    """The best label of the single image in a ``/v1/models/{m}/classify`` response.

    The response is ``{"model", "version", "results": [{"filename", "predictions": [{"label", "index", "score"}]}]}``
    with predictions best first.
    """
    if payload.get("model") != model or len(payload["results"]) != 1:
        raise SmokeFailure(f"expected one result from model {model}, got {payload}")
    predictions = payload["results"][0]["predictions"]
    scores = [p["score"] for p in predictions]
    if scores != sorted(scores, reverse=True) or not 0.0 <= scores[0] <= 1.0:
        raise SmokeFailure(f"predictions are not softmax scores best first: {predictions}")
    return str(predictions[0]["label"])


def enlarged_png(path: Path, factor: int = 4) -> bytes:
    """The sample scaled up with Pillow (nearest neighbour), so the service's resize has real work to do."""
    with Image.open(path) as image:
        big = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    return buffer.getvalue()


def classify_samples(base: str, model: str) -> tuple[int, int, list[float]]:
    """Classify every sample twice (as committed, enlarged); returns (correct, total, latencies in seconds)."""
    samples = sorted(SAMPLES.glob("digit-*.png"))
    if len(samples) != 10:
        raise SmokeFailure(f"expected 10 samples in {SAMPLES}, found {len(samples)}")
    correct, latencies = 0, []
    for path in samples:
        truth = path.stem.split("-")[1]
        for body in (path.read_bytes(), enlarged_png(path)):
            start = time.monotonic()
            status, raw = request(f"{base}/v1/models/{model}/classify", body, "image/png")
            latencies.append(time.monotonic() - start)
            if status != 200:
                raise SmokeFailure(f"classify {path.name}: HTTP {status}, expected 200: {raw[:300]!r}")
            correct += top_label(json.loads(raw), model) == truth
    return correct, 2 * len(samples), latencies


def check_v2_metadata(base: str, model: str) -> None:
    """KServe v2 model metadata names the model and its input."""
    status, raw = request(f"{base}/v2/models/{model}")
    if status != 200:
        raise SmokeFailure(f"/v2/models/{model}: HTTP {status}, expected 200: {raw[:300]!r}")
    meta = json.loads(raw)
    if meta.get("name") != model or not meta.get("inputs"):
        raise SmokeFailure(f"/v2/models/{model} metadata lacks name/inputs: {meta}")


def check_metrics(base: str, model: str, sent: int) -> None:
    """/metrics counted at least the classifications sent, in the histogram and Triton's counter."""
    status, raw = request(f"{base}/metrics")
    if status != 200:
        raise SmokeFailure(f"/metrics: HTTP {status}, expected 200")
    text = raw.decode()
    for name in ("cnnserve_request_duration_seconds_count", "nv_inference_request_success"):
        match = re.search(rf'^{name}{{[^}}]*model="{re.escape(model)}"[^}}]*}} ([0-9.e+]+)$', text, re.M)
        if match is None or float(match.group(1)) < sent:
            got = match.group(1) if match else "no series"
            raise SmokeFailure(f"/metrics {name}{{model={model}}}: expected >= {sent}, got {got}")


def check_grpc(address: str, model: str) -> None:
    """Over gRPC (``tritonclient.grpc``, as Triton's users run it): health SERVING, and a digit classified right."""
    import grpc
    import numpy as np
    import tritonclient.grpc as grpcclient
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    if health.status != health_pb2.HealthCheckResponse.SERVING:
        raise SmokeFailure(f"gRPC health of {address}: {health.status}, expected SERVING")
    with grpcclient.InferenceServerClient(address) as client:
        (tensor,) = client.get_model_metadata(model).inputs
        size = int(tensor.shape[-1])
        digit = Image.open(SAMPLES / "digit-7.png").convert("L").resize((size, size), Image.Resampling.BILINEAR)
        x = (np.asarray(digit, np.float32) / 255.0).reshape(1, 1, size, size)
        wanted = grpcclient.InferInput(tensor.name, list(x.shape), tensor.datatype)
        wanted.set_data_from_numpy(x)
        top = client.infer(model, [wanted], outputs=[grpcclient.InferRequestedOutput("logits", class_count=1)])
    label = top.as_numpy("logits")[0][0].decode().split(":")[-1]
    if label != "7":
        raise SmokeFailure(f"gRPC infer of digit-7.png answered {label!r}, expected '7'")
    print(f"smoke: gRPC {address}: health SERVING, digit-7.png as raw pixels -> {label!r}")


def main(argv: list[str] | None = None) -> int:
    """Run every check in order; print timings; exit 1 on the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", default="lenet5_digits", help="model to classify with")
    parser.add_argument("--grpc", help="also check the KServe v2 gRPC port at HOST:PORT")
    parser.add_argument("--ready-timeout-s", type=float, default=120.0, help="bound on the wait for readiness")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    try:
        print(f"smoke: ready after {wait_ready(base, args.ready_timeout_s):.1f} s")
        correct, total, latencies = classify_samples(base, args.model)
        latencies.sort()
        print(
            f"smoke: {correct}/{total} sample digits classified correctly; latency median "
            f"{latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )
        if correct < MIN_CORRECT:
            raise SmokeFailure(f"{correct}/{total} digits right, expected at least {MIN_CORRECT}")
        check_v2_metadata(base, args.model)
        check_metrics(base, args.model, total)
        print("smoke: v2 metadata and /metrics counters OK")
        if args.grpc:
            check_grpc(args.grpc, args.model)
    except (SmokeFailure, KeyError, IndexError, ValueError) as err:
        print(f"smoke: FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
