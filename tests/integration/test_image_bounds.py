"""A hostile aspect ratio costs the real server what the model's input costs, not what the client's shape would.

A 17.6 KB PNG of 6,000,001 × 3 pixels (under the default 40 M pixel limit) used to be resized whole to about
64,000,000 × 32 before the centre crop: about a minute and gigabytes per request, every other image request
waiting behind it. Here two of them go in at once beside ordinary requests, on a server with the default limit;
all are answered correctly and the server's resident memory (``/proc/<pid>/status``) grows by little.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_server import Reference, Server, start_server
from PIL import Image

from service.preprocess import ImageTransform, preprocess, softmax
from service.repository import load_model_config

MODEL = "lenet5_digits"
MAX_PIXELS = 40_000_000  # the default CNNSERVE_MAX_IMAGE_PIXELS: the hostile image is under it
RSS_GROWTH_LIMIT_BYTES = 300 * 2**20
ORDINARY = 16  # ordinary requests sent beside the two hostile ones
REQUEST_TIMEOUT_S = 60.0  # a sanity bound only: the fixed server answers in well under a second


@pytest.fixture(scope="module")
def roomy_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """lenet5_digits alone, with the default pixel limit (the shared server's is too small for the image)."""
    running = start_server(
        model_repository,
        tmp_path_factory.mktemp("image_bounds") / "server.log",
        "--models",
        MODEL,
        max_image_pixels=str(MAX_PIXELS),
        workers="1",  # one process, so /proc/<pid> is the process that decodes
    )
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def _status_bytes(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/<pid>/status``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (``VmHWM``) where the kernel allows it; False where it does not."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _classify(server: Server, image: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{MODEL}/classify",
        params={"top_k": 10},
        content=image,
        headers={"Content-Type": "image/png"},
        timeout=REQUEST_TIMEOUT_S,
    )


def _scores(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    predictions = response.json()["results"][0]["predictions"]
    by_index = {p["index"]: p["score"] for p in predictions}
    return [by_index[i] for i in range(len(predictions))]


def test_hostile_aspect_ratio_beside_ordinary_requests_keeps_memory_and_answers_right(
    roomy_server: Server,
    model_repository: Path,
    digits_holdout: list[tuple[bytes, int]],
    reference: Reference,
) -> None:
    buffer = io.BytesIO()
    Image.new("L", (6_000_001, 3), 200).save(buffer, format="PNG")
    hostile = buffer.getvalue()
    ordinary = [png for png, _ in digits_holdout[:ORDINARY]]
    config = load_model_config(model_repository / MODEL)
    assert config.preprocessing is not None
    transform = ImageTransform.from_config(config.preprocessing)

    def expected(image: bytes) -> np.ndarray:
        return softmax(reference(MODEL, preprocess(image, transform, MAX_PIXELS)[None]))[0]

    for png in ordinary[:4]:  # warm up: codecs, threads, allocator pools
        _scores(_classify(roomy_server, png))
    pid = roomy_server.process.pid
    rss_before = _status_bytes(pid, "VmRSS")
    peak_reset = _reset_peak(pid)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=6) as pool:
        hostile_calls = [pool.submit(_classify, roomy_server, hostile) for _ in range(2)]
        ordinary_calls = [pool.submit(_classify, roomy_server, png) for png in ordinary]
        hostile_answers = [call.result() for call in hostile_calls]
        ordinary_answers = [call.result() for call in ordinary_calls]
    elapsed = time.perf_counter() - started

    rss_after = _status_bytes(pid, "VmRSS")
    peak = _status_bytes(pid, "VmHWM") if peak_reset else rss_after
    print(
        f"{len(hostile)} B PNG of 6000001x3 twice + {ORDINARY} ordinary: all answered in {elapsed:.2f} s; "
        f"server RSS {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB after, "
        f"peak {peak / 2**20:.0f} MiB ({'VmHWM reset before' if peak_reset else 'VmHWM not resettable: RSS after'})"
    )
    for answer in hostile_answers:
        np.testing.assert_allclose(_scores(answer), expected(hostile), atol=1e-6)
    for png, answer in zip(ordinary, ordinary_answers, strict=True):
        np.testing.assert_allclose(_scores(answer), expected(png), atol=1e-6)
    assert peak - rss_before < RSS_GROWTH_LIMIT_BYTES
    assert elapsed < 2 * REQUEST_TIMEOUT_S  # sanity only
