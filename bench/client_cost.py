"""What the load generator costs: client CPU per request for the harness's client, aiohttp and tritonclient, over
HTTP, and over gRPC when the server has a gRPC port (the harness's gRPC lanes, and ``tritonclient.grpc.aio``).

Each client sends the same v2 request to the same server at the same concurrency; CPU time of this process over
the run, divided by requests, is the cost. This is the evidence for the harness's choice of client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import aiohttp
import numpy as np
import uvloop

from loadtest.grpc_payloads import grpc_workload
from loadtest.grpc_target import GrpcTarget
from loadtest.http import Endpoint
from loadtest.payloads import v2_body
from loadtest.transport import Lane, Transport

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


async def _lean(transport: Transport, request: bytes, requests: int) -> int:
    """The harness's own lanes (``loadtest.transport``): each answered lane sends again at once."""
    left, ok = [requests - CONCURRENCY], [0]
    done = asyncio.get_running_loop().create_future()

    def on_done(lane: Lane, status: int, error: str | None) -> None:
        ok[0] += status == 200
        if left[0] > 0:
            left[0] -= 1
            lane.send(request, 0.0)
        elif not any(c.busy for c in lanes) and not done.done():
            done.set_result(None)

    lanes = [await transport.connect(on_done) for _ in range(CONCURRENCY)]
    for lane in lanes:
        lane.send(request, 0.0)
    await done
    for lane in lanes:
        lane.close()
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


async def _tritonclient(address: str, model: str, metadata: dict[str, Any], requests: int, grpc: bool) -> int:
    """``tritonclient.http.aio`` (binary tensors), or ``tritonclient.grpc.aio`` with ``grpc``."""
    import tritonclient.grpc as grpc_client
    import tritonclient.grpc.aio as grpc_aio
    import tritonclient.http as http_client
    import tritonclient.http.aio as http_aio

    spec = metadata["inputs"][0]
    x = np.random.default_rng(0).standard_normal([1, *spec["shape"][1:]]).astype(np.float32)
    client = grpc_aio.InferenceServerClient(address) if grpc else http_aio.InferenceServerClient(address, CONCURRENCY)
    binary = {} if grpc else {"binary_data": True}
    kinds: Any = grpc_client if grpc else http_client
    ok = 0

    async def user(n: int) -> None:
        nonlocal ok
        for _ in range(n):
            tensor = kinds.InferInput(spec["name"], list(x.shape), spec["datatype"])
            tensor.set_data_from_numpy(x, **binary)
            outputs = [kinds.InferRequestedOutput(o["name"], **binary) for o in metadata["outputs"]]
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


def measure(endpoint: Endpoint, model: str, metadata: dict[str, Any], requests: int, grpc_port: int = 0) -> ClientCost:
    """CPU µs per request of each client against ``endpoint`` (same request, concurrency 8), and against its gRPC
    port on the same host when there is one."""
    requests -= requests % CONCURRENCY
    body, header = v2_body(metadata, 1, True, np.random.default_rng(0))
    assert header is not None
    request = endpoint.request(
        "POST", f"/v2/models/{model}/infer", body, {"Inference-Header-Content-Length": str(header)}
    )
    address = f"{endpoint.host}:{endpoint.port}"
    clients = {
        "loadtest (uvloop + httptools)": _timed(lambda: _lean(endpoint, request, requests), requests),
        "aiohttp": _timed(lambda: _aiohttp(endpoint, model, body, header, requests), requests),
        "tritonclient.http.aio": _timed(lambda: _tritonclient(address, model, metadata, requests, False), requests),
    }
    if grpc_port:
        message = grpc_workload(model, metadata).requests[0]
        for name, streaming in (("loadtest gRPC unary", False), ("loadtest gRPC stream", True)):
            target = GrpcTarget(endpoint.host, grpc_port, streaming)
            clients[name] = _timed(partial(_lean, target, message, requests), requests)
        grpc_address = f"{endpoint.host}:{grpc_port}"
        clients["tritonclient.grpc.aio"] = _timed(
            lambda: _tritonclient(grpc_address, model, metadata, requests, True), requests
        )
    return ClientCost(CONCURRENCY, clients)
