"""Front-door admission (``service.admission``): the in-flight policy, the prebuilt refusal, and its wiring.

The front door that applies it to real connections is tested against a real server in
tests/integration/test_front_door_admission.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from service.admission import (
    KEEP_ALIVE_MAX_BODY_BYTES,
    MAX_REQUEST_ID_BYTES,
    STATE_KEY,
    Admission,
    InflightLimit,
    client_request_id,
    fit_request_id,
    is_probe,
    small_body,
)
from service.idle_poll import IdlePoll
from service.main import create_app
from service.metrics import Metrics
from service.settings import Settings

LIMIT = 2


def test_the_policy_admits_up_to_the_limit_and_again_after_a_release() -> None:
    policy = InflightLimit(LIMIT)
    assert [(policy.full, policy.admit()) for _ in range(LIMIT + 1)] == [(False, True), (False, True), (True, False)]
    assert policy.inflight == LIMIT  # a refusal counts nothing
    policy.release()
    assert not policy.full
    assert policy.admit()
    assert policy.full
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
        ([(b"content-length", "²".encode())], False),
        ([(b"transfer-encoding", b"chunked")], False),
        ([(b"content-length", b"10"), (b"transfer-encoding", b"chunked")], False),
    ],
)
def test_small_body_decides_whether_a_refusal_keeps_the_connection(
    headers: list[tuple[bytes, bytes]], small: bool
) -> None:
    assert small_body(headers) is small


@pytest.mark.parametrize(
    ("path", "probe"),
    [
        ("/v2/health/ready", True),
        ("/v2/health/live", True),
        ("/metrics", True),
        ("/v2/models/m/ready", True),
        ("/v2/models/m/versions/1/ready", True),
        ("/v2/models/m/infer", False),
        ("/v1/models/m/classify", False),
        ("/metrics/x", False),
        ("/v2/repository/index", False),
    ],
)
def test_probes_are_health_readiness_and_metrics_only(path: str, probe: bool) -> None:
    assert is_probe(path) is probe


def test_a_request_id_is_echoed_when_fit_and_minted_unique_otherwise() -> None:
    assert client_request_id([(b"host", b"h"), (b"x-request-id", b"trace-42")]) == b"trace-42"
    assert client_request_id([(b"host", b"h")]) == b""
    assert fit_request_id(b"trace-42") == b"trace-42"
    assert fit_request_id(b" trace-42 \t") == b"trace-42"  # blanks around a value are not part of it
    unfit = [b"", b" \t ", b"x" * (MAX_REQUEST_ID_BYTES + 1), "é".encode()]
    minted = [fit_request_id(value) for value in unfit] + [fit_request_id(b"") for _ in range(1000)]
    assert len(set(minted)) == len(minted)
    assert all(value.isascii() and 0 < len(value) <= MAX_REQUEST_ID_BYTES for value in minted)


def _parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


@pytest.mark.parametrize("close", [False, True])
def test_the_refusal_is_a_complete_429_that_names_the_setting_and_is_counted(close: bool) -> None:
    shed: list[tuple[int, str]] = []
    admission = Admission(InflightLimit(LIMIT), on_shed=lambda status, code: shed.append((status, code)))
    status, headers, body = _parse(admission.refusal("POST", "/x", b"r-1", close))
    assert status == "HTTP/1.1 429 Too Many Requests"
    assert headers["retry-after"] == "1"
    assert headers["x-request-id"] == "r-1"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert (headers.get("connection") == "close") is close
    answer = orjson.loads(body)
    assert answer["code"] == "overloaded"
    assert f"{LIMIT} requests already in flight" in answer["error"]
    assert "CNNSERVE_MAX_INFLIGHT_REQUESTS" in answer["error"]
    assert shed == [(429, "overloaded")]


def test_a_shed_request_is_counted_by_reason_under_the_server() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.shed(429, "overloaded")
    metrics.shed(429, "overloaded")
    value = registry.get_sample_value(
        "cnnserve_requests_total", {"model": "(server)", "outcome": "rejected", "reason": "overloaded"}
    )
    assert value == 2


async def test_the_app_publishes_its_admission_for_the_front_door(tiny_repository: Callable[..., Path]) -> None:
    """The wiring: on by default, published in the lifespan state, counted and exported by the app's metrics."""
    settings = Settings(repository_path=tiny_repository(), preprocess_threads=1)
    assert settings.max_inflight_requests > 0
    app = create_app(settings)
    state: dict[str, object] = {}
    async with app.router.lifespan_context(app) as published:
        state.update(published or {})
        admission = state[STATE_KEY]
        assert isinstance(admission, Admission)
        assert admission.policy.limit == settings.max_inflight_requests
        assert admission.policy.admit()
        admission.refusal("POST", "/v2/models/tiny/infer", b"", close=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            scrape = (await client.get("/metrics")).text
        admission.policy.release()
    assert 'cnnserve_requests_total{model="(server)",outcome="rejected",reason="overloaded"} 1.0' in scrape
    assert "cnnserve_server_inflight_requests 1.0" in scrape


@pytest.mark.parametrize("idle_poll_us", [0, 200])
async def test_the_app_polls_when_idle_only_while_it_runs_and_only_if_set(
    tiny_repository: Callable[..., Path], idle_poll_us: int
) -> None:
    """The lifespan hands the policy the event loop's idle poll (``service.idle_poll``), and takes it back. (A
    single-process app has no sibling workers to tell: ``service.compute_gate``'s watcher is not added.)"""
    app = create_app(Settings(repository_path=tiny_repository(), preprocess_threads=1, idle_poll_us=idle_poll_us))
    async with app.router.lifespan_context(app) as published:
        policy = (published or {})[STATE_KEY].policy
        assert [type(watcher) for watcher in policy.watchers] == ([IdlePoll] if idle_poll_us else [])
    assert policy.watchers == []
