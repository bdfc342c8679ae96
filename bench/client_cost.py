"""What the load generator costs: client CPU per request for the harness's client, aiohttp and tritonclient.

Each client sends the same v2 binary request to the same server at the same concurrency; CPU time of this
process over the run, divided by requests, is the cost. This is the evidence for the harness's choice of client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import numpy as np
import uvloop

from loadtest.http import Endpoint, open_connection
from loadtest.payloads import v2_body

CONCURRENCY = 8


@dataclass(frozen=True)
class ClientRun:
    """One client's run: requests sent and answered, CPU µs per request (the cost), and the rate it reached."""

    requests: int
    ok: int
    cpu_us_per_request: float
    requests_per_s: float


@dataclass(frozen=True)
class ClientCost:
    """Every client's run, by name, at the same concurrency."""

    concurrency: int
    clients: dict[str, ClientRun]

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, **{name: asdict(run) for name, run in self.clients.items()}}


async def _lean(endpoint: Endpoint, model: str, body: bytes, header: int, requests: int) -> int:
    request = endpoint.request(
        "POST", f"/v2/models/{model}/infer", body, {"Inference-Header-Content-Length": str(header)}
    )
    left, ok = [requests - CONCURRENCY], [0]
    done = asyncio.get_running_loop().create_future()

    def on_done(connection: Any, status: int, error: str | None) -> None:
        ok[0] += status == 200
        if left[0] > 0:
            left[0] -= 1
            connection.send(request, 0.0)
        elif not any(c.busy for c in connections) and not done.done():
            done.set_result(None)

    connections = [await open_connection(endpoint, on_done) for _ in range(CONCURRENCY)]
    for connection in connections:
        connection.send(request, 0.0)
    await done
    for connection in connections:
        connection.close()
    return ok[0]


async def _aiohttp(endpoint: Endpoint, model: str, body: bytes, header: int, requests: int) -> int:
    url = f"{endpoint.url}/v2/models/{model}/infer"
    headers = {"Inference-Header-Content-Length": str(header)}
    ok = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

        async def user(n: int) -> None:
            nonlocal ok
            for _ in range(n):
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    ok += answer.status == 200

        await asyncio.gather(*(user(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    return ok


async def _tritonclient(endpoint: Endpoint, model: str, metadata: dict[str, Any], requests: int) -> int:
    import tritonclient.http as http
    import tritonclient.http.aio as aio

    spec = metadata["inputs"][0]
    x = np.random.default_rng(0).standard_normal([1, *spec["shape"][1:]]).astype(np.float32)
    client = aio.InferenceServerClient(f"{endpoint.host}:{endpoint.port}", conn_limit=CONCURRENCY)
    ok = 0

    async def user(n: int) -> None:
        nonlocal ok
        for _ in range(n):
            tensor = http.InferInput(spec["name"], list(x.shape), spec["datatype"])
            tensor.set_data_from_numpy(x, binary_data=True)
            outputs = [http.InferRequestedOutput(o["name"], binary_data=True) for o in metadata["outputs"]]
            await client.infer(model, [tensor], outputs=outputs)
            ok += 1

    try:
        await asyncio.gather(*(user(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    finally:
        await client.close()
    return ok


def _timed(run: Callable[[], Coroutine[Any, Any, int]], requests: int) -> ClientRun:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = uvloop.run(run())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return ClientRun(requests, ok, 1e6 * cpu / requests, ok / wall)


def measure(endpoint: Endpoint, model: str, metadata: dict[str, Any], requests: int) -> ClientCost:
    """CPU µs per request of each client against ``endpoint`` (same request, concurrency 8)."""
    requests -= requests % CONCURRENCY
    body, header = v2_body(metadata, 1, True, np.random.default_rng(0))
    assert header is not None
    clients = {
        "loadtest (uvloop + httptools)": _timed(lambda: _lean(endpoint, model, body, header, requests), requests),
        "aiohttp": _timed(lambda: _aiohttp(endpoint, model, body, header, requests), requests),
        "tritonclient.http.aio": _timed(lambda: _tritonclient(endpoint, model, metadata, requests), requests),
    }
    return ClientCost(CONCURRENCY, clients)
