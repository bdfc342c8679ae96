"""Soak: a mixed load of good and bad requests for a while; the server's memory, file descriptors and threads stay flat.

Runs ``--soak-s`` seconds (default ``DEFAULT_SOAK_S``, a CI-sized soak; pass more for a longer one) against its own
``python -m service``, sampling the process from /proc. The first quarter is warm-up (thread pools fill, allocator
arenas settle); growth is measured from its end. Figures are printed, bounds are generous.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from live_server import REPO_ROOT, Server, start_server

DEFAULT_SOAK_S = 60.0
CLIENTS = 8
MAX_REQUESTS = 500_000  # a bound on the loop whatever the duration
SAMPLE_EVERY_S = 1.0
RSS_GROWTH_LIMIT_MB = 40.0


@dataclass(frozen=True)
class Sample:
    """One look at the server process."""

    at_s: float
    rss_mb: float
    threads: int
    fds: int


def sample(pid: int, started: float) -> Sample:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Sample(
        at_s=time.monotonic() - started,
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        threads=int(status["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


@pytest.fixture(scope="module")
def soak_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One process, so /proc/<pid> is the process that serves (with workers it would be their supervisor).
    running = start_server(
        model_repository, tmp_path_factory.mktemp("logs") / "soak.log", models="lenet5_digits", workers="1"
    )
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def _v2_binary() -> tuple[bytes, dict[str, str]]:
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    tensor = {"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "parameters": {"binary_data_size": 4096}}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def _requests() -> list[tuple[str, str, bytes, dict[str, str], int]]:
    """(method, path, body, headers, expected status): the mix each client cycles through."""
    png = (REPO_ROOT / "samples" / "digits" / "digit-3.png").read_bytes()
    binary, binary_headers = _v2_binary()
    json_body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.5] * 1024}]}
    )
    classify = "/v1/models/lenet5_digits/classify"
    infer = "/v2/models/lenet5_digits/infer"
    return [
        ("POST", classify, png, {"Content-Type": "image/png"}, 200),
        ("POST", infer, binary, binary_headers, 200),
        ("POST", infer, json_body, {"Content-Type": "application/json"}, 200),
        ("POST", classify, gzip.compress(png), {"Content-Type": "image/png", "Content-Encoding": "gzip"}, 200),
        ("POST", classify, png, {"Content-Type": "image/png", "Connection": "close"}, 200),  # connection churn
        ("POST", classify, png[: len(png) // 2], {"Content-Type": "image/png"}, 400),  # truncated image
        ("POST", infer, b"{not json", {"Content-Type": "application/json"}, 400),
        ("POST", "/v2/models/no_such_model/infer", binary, binary_headers, 404),
        ("GET", "/v2/models/lenet5_digits", b"", {}, 200),
        ("GET", "/metrics", b"", {}, 200),
    ]


async def _client(url: str, until: float, budget: list[int], outcomes: Counter[str], offset: int) -> None:
    mix = _requests()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        i = offset
        while time.monotonic() < until and budget[0] > 0:
            budget[0] -= 1
            method, path, body, headers, expected = mix[i % len(mix)]
            i += 1
            response = await client.request(method, path, content=body or None, headers=headers)
            outcomes["expected" if response.status_code == expected else f"{path} {response.status_code}"] += 1


async def _load(url: str, pid: int, seconds: float) -> tuple[list[Sample], Counter[str]]:
    started = time.monotonic()
    until = started + seconds
    budget = [MAX_REQUESTS]
    outcomes: Counter[str] = Counter()
    clients = [asyncio.ensure_future(_client(url, until, budget, outcomes, n)) for n in range(CLIENTS)]
    samples = [sample(pid, started)]
    while not all(c.done() for c in clients):
        await asyncio.wait(clients, timeout=SAMPLE_EVERY_S)
        samples.append(sample(pid, started))
    await asyncio.gather(*clients)
    return samples, outcomes


def _settled_fds(pid: int, baseline: int, timeout_s: float = 10.0) -> int:
    """File descriptors once the server has closed the finished clients' connections (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    while fds > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    return fds


def test_a_long_mixed_load_leaves_memory_fds_and_threads_flat(
    soak_server: Server, request: pytest.FixtureRequest
) -> None:
    seconds = float(request.config.getoption("--soak-s") or DEFAULT_SOAK_S)
    pid = soak_server.process.pid
    idle = sample(pid, time.monotonic())
    samples, outcomes = asyncio.run(_load(soak_server.url, pid, seconds))
    fds_after = _settled_fds(pid, idle.fds)
    total = sum(outcomes.values())
    warm = [s for s in samples if s.at_s >= seconds / 4]
    first, last = warm[0], warm[-1]
    peak = max(s.rss_mb for s in warm)
    print(
        f"\nsoak {seconds:.0f} s, {CLIENTS} clients: {total} requests ({total / seconds:.0f}/s); "
        f"RSS idle {idle.rss_mb:.1f} MB, after warm-up {first.rss_mb:.1f} MB, end {last.rss_mb:.1f} MB, "
        f"peak {peak:.1f} MB; threads idle {idle.threads}, after warm-up {first.threads}, end {last.threads}; "
        f"fds idle {idle.fds}, after the load {fds_after}"
    )
    assert outcomes["expected"] == total, f"unexpected answers: {dict(outcomes)}"
    assert total >= 10 * CLIENTS, f"only {total} requests in {seconds} s"
    assert peak - first.rss_mb < RSS_GROWTH_LIMIT_MB, f"RSS grew {peak - first.rss_mb:.1f} MB after warm-up"
    assert max(s.threads for s in warm) <= first.threads, "threads kept being created after warm-up"
    assert fds_after <= idle.fds, f"{fds_after - idle.fds} file descriptors leaked"
    assert soak_server.process.poll() is None
