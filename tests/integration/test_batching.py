"""Concurrent requests are really batched on the server, and every caller still gets its own answer."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson
from live_server import Reference, Server, metric_value

CONCURRENCY = 64


def binary_request(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def decode(response: httpx.Response) -> np.ndarray:
    length = int(response.headers["inference-header-content-length"])
    output = orjson.loads(response.content[:length])["outputs"][0]
    return np.frombuffer(response.content[length:], np.float32).reshape(output["shape"])


async def fire(server: Server, inputs: list[np.ndarray]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:

        async def one(x: np.ndarray) -> httpx.Response:
            body, headers = binary_request(x)
            return await client.post("/v2/models/small_cnn/infer", content=body, headers=headers)

        return await asyncio.gather(*(one(x) for x in inputs))


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server: Server, reference: Reference) -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(CONCURRENCY)]
    before = httpx.get(f"{server.url}/metrics").text
    responses = asyncio.run(fire(server, inputs))
    after = httpx.get(f"{server.url}/metrics").text
    for x, response in zip(inputs, responses, strict=True):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(decode(response), reference("small_cnn", x), rtol=1e-5, atol=1e-5)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, model="small_cnn", **labels) - metric_value(
            before, name, **labels, model="small_cnn"
        )

    batches = delta("cnnserve_batch_size_count")
    singles = delta("cnnserve_batch_size_bucket", le="1.0")
    assert delta("cnnserve_batch_size_sum") == CONCURRENCY
    assert batches < CONCURRENCY, "every request ran alone: nothing was batched"
    assert singles < batches, "no batch held more than one request"
    assert delta("nv_inference_exec_count") == batches
    assert delta("nv_inference_count") == CONCURRENCY
