"""Front-door admission (``service.api.admission``): the in-flight bound, the cheap refusal, probes never shed.

The app behind the middleware is held on an event, so "in flight" is a state the test sets up, not a race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from service.api.admission import KEEP_ALIVE_MAX_BODY_BYTES, AdmissionMiddleware, InflightLimit, small_body
from service.main import create_app
from service.metrics import Metrics
from service.settings import Settings

LIMIT = 2


def test_the_policy_admits_up_to_the_limit_and_again_after_a_release() -> None:
    policy = InflightLimit(LIMIT)
    assert [policy.admit() for _ in range(LIMIT + 1)] == [True, True, False]
    assert policy.inflight == LIMIT  # a refusal counts nothing
    policy.release()
    assert policy.admit()
    assert not policy.admit()


def test_a_limit_of_zero_admits_everything() -> None:
    policy = InflightLimit(0)
    assert all(policy.admit() for _ in range(10_000))
    assert policy.inflight == 10_000


@pytest.mark.parametrize(
    ("headers", "small"),
    [
        ([], True),
        ([(b"content-length", b"0")], True),
        ([(b"content-length", str(KEEP_ALIVE_MAX_BODY_BYTES).encode())], True),
        ([(b"content-length", str(KEEP_ALIVE_MAX_BODY_BYTES + 1).encode())], False),
        ([(b"content-length", b"-1")], False),
        ([(b"transfer-encoding", b"chunked")], False),
        ([(b"content-length", b"10"), (b"transfer-encoding", b"chunked")], False),
    ],
)
def test_small_body_decides_whether_a_refusal_keeps_the_connection(
    headers: list[tuple[bytes, bytes]], small: bool
) -> None:
    assert small_body(headers) is small


class HeldApp:
    """An ASGI app that answers 200 once ``release`` is set; ``entered`` counts the requests it holds."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.arrived = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        self.arrived.set()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _client(app: AdmissionMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _until(check: Callable[[], bool]) -> None:
    """Wait, bounded, for the state the test needs; each step yields to the requests under way."""
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0)


async def test_requests_beyond_the_limit_get_429_without_reaching_the_app() -> None:
    inner = HeldApp()
    shed: list[tuple[int, str]] = []
    app = AdmissionMiddleware(inner, InflightLimit(LIMIT), on_shed=lambda status, code: shed.append((status, code)))
    async with _client(app) as client, asyncio.TaskGroup() as group:
        held = [group.create_task(client.post("/v2/models/m/infer", content=b"x")) for _ in range(LIMIT)]
        await _until(lambda: inner.entered == LIMIT)
        small = await client.post("/v2/models/m/infer", content=b"x" * 100)
        large = await client.post("/v1/models/m/classify", content=b"x" * (KEEP_ALIVE_MAX_BODY_BYTES + 1))
        inner.release.set()
        assert [(await answer).status_code for answer in held] == [200] * LIMIT
    assert inner.entered == LIMIT
    for refused in (small, large):
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        body = orjson.loads(refused.content)
        assert body["code"] == "overloaded"
        assert f"{LIMIT} requests already in flight" in body["error"]
        assert "CNNSERVE_MAX_INFLIGHT_REQUESTS" in body["error"]
    assert "connection" not in small.headers  # small body: uvicorn discards it, the connection is kept
    assert large.headers["connection"] == "close"  # not worth receiving: closed
    assert shed == [(429, "overloaded"), (429, "overloaded")]
    assert app.policy.inflight == 0


async def test_probes_are_answered_while_the_limit_is_reached_and_take_no_slot() -> None:
    inner = HeldApp()
    app = AdmissionMiddleware(inner, InflightLimit(1), on_shed=lambda status, code: None)
    async with _client(app) as client, asyncio.TaskGroup() as group:
        held = group.create_task(client.post("/v2/models/m/infer", content=b"x"))
        await _until(lambda: inner.entered == 1)
        inner.entered = 0
        probes = [
            group.create_task(client.get(path))
            for path in ("/v2/health/ready", "/v2/health/live", "/metrics", "/v2/models/m/ready")
        ]
        await _until(lambda: inner.entered == len(probes))  # every probe reached the app past the full limit
        assert app.policy.inflight == 1
        inner.release.set()
        assert (await held).status_code == 200
        assert [(await probe).status_code for probe in probes] == [200] * len(probes)


async def test_a_failing_request_releases_its_slot() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    app = AdmissionMiddleware(broken, InflightLimit(1), on_shed=lambda status, code: None)
    scope: Scope = {"type": "http", "path": "/v2/models/m/infer", "headers": []}
    for _ in range(3):
        with pytest.raises(RuntimeError, match="boom"):
            await app(scope, _never_receive, _discard)
    assert app.policy.inflight == 0


async def _never_receive() -> dict[str, object]:
    raise AssertionError("admission must not read the body")


async def _discard(message: object) -> None:
    return None


def test_a_shed_request_is_counted_by_reason_under_the_server() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.shed(429, "overloaded")
    metrics.shed(429, "overloaded")
    value = registry.get_sample_value(
        "cnnserve_requests_total", {"model": "(server)", "outcome": "rejected", "reason": "overloaded"}
    )
    assert value == 2


async def test_the_service_sheds_past_its_limit_and_counts_it(tiny_repository: Callable[..., Path]) -> None:
    """The wiring, on the real app: admission is on by default, sits inside the request id, and is counted."""
    settings = Settings(repository_path=tiny_repository(), preprocess_threads=1)
    assert settings.max_inflight_requests > 0
    app = create_app(settings.model_copy(update={"max_inflight_requests": 1}))
    stack = app.build_middleware_stack()
    app.middleware_stack = stack
    while not isinstance(stack, AdmissionMiddleware):
        stack = stack.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert stack.policy.admit()  # one request in flight: the limit is reached
        refused = await c.post("/v2/models/tiny/infer", content=b"{}", headers={"X-Request-ID": "shed-1"})
        assert (await c.get("/v2/health/ready")).status_code == 200
        scrape = (await c.get("/metrics")).text
        stack.policy.release()
        assert (await c.get("/v2/models/tiny")).status_code == 200
    assert refused.status_code == 429
    assert refused.json()["code"] == "overloaded"
    assert refused.headers["x-request-id"] == "shed-1"
    assert 'cnnserve_requests_total{model="(server)",outcome="rejected",reason="overloaded"} 1.0' in scrape
