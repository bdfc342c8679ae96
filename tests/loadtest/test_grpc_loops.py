"""The gRPC transport in both loops against a fake v2 gRPC server: counts, error kinds, lost connections and streams.

As for HTTP (``test_loops``, ``test_connection_loss``), no assertion races the clock: windows end at a request
cap, the fake holds answers (``answers_left``) while a test cuts connections under requests in flight, and a
failure to connect is a refusal, not a slow server.
"""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from fake_grpc_server import FakeGrpc, serve

from loadtest.closed_loop import ClosedLoop
from loadtest.grpc_lanes import outcome
from loadtest.grpc_payloads import fetch_grpc_metadata, grpc_workload
from loadtest.grpc_target import GrpcTarget
from loadtest.open_loop import OpenLoop
from loadtest.payloads import Workload
from loadtest.report import summarise
from loadtest.results import OpenLoad
from loadtest.step_result import StepResult

TIMEOUT_S = 30.0  # far above anything a loaded machine needs here: a timeout would mean a stuck request
STREAMING = pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])


async def _workload(target: GrpcTarget) -> Workload:
    return grpc_workload("m", await fetch_grpc_metadata(target, "m"), batch=2)


async def _closed(target: GrpcTarget, users: int, requests: int, timeout_s: float = TIMEOUT_S) -> StepResult:
    """A closed loop of ``users`` measured from the start until ``requests`` were sent and answered."""
    driver = ClosedLoop(target, await _workload(target), timeout_s)
    await driver.start(users)
    driver.measure(duration_s=TIMEOUT_S, max_requests=requests)
    return await driver.finish()


def test_grpc_statuses_are_counted_as_their_http_twins() -> None:
    assert outcome(grpc.StatusCode.OK) == (200, None)
    assert outcome(grpc.StatusCode.RESOURCE_EXHAUSTED) == (429, None)
    assert outcome(grpc.StatusCode.INVALID_ARGUMENT) == (400, None)
    assert outcome(grpc.StatusCode.INTERNAL) == (500, None)
    assert outcome(grpc.StatusCode.DEADLINE_EXCEEDED) == (0, "timeout")
    assert outcome(grpc.StatusCode.UNAVAILABLE) == (0, "unavailable")
    assert all(outcome(code) for code in grpc.StatusCode)  # every status has its kind


def test_a_grpc_address_is_host_and_port_and_a_token_travels_as_metadata() -> None:
    target = GrpcTarget.from_address("grpc://10.0.0.1:8001", streaming=True, token="t")
    assert (target.host, target.port, target.url) == ("10.0.0.1", 8001, "grpc://10.0.0.1:8001 (stream)")
    assert target.metadata == (("authorization", "Bearer t"),)
    assert GrpcTarget.from_address("[::1]:9").host == "::1"
    with pytest.raises(ValueError, match="not host:port"):
        GrpcTarget.from_address("localhost")


async def test_requests_are_built_once_from_the_model_metadata() -> None:
    fake = FakeGrpc()
    async with serve(fake) as (target, _):
        workload = await _workload(target)
        await _closed(target, users=1, requests=3)
    request = fake.inputs[0]
    assert request.model_name == "m"
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [("input", "FP32", [2, 1, 4, 4])]
    assert [len(raw) for raw in request.raw_input_contents] == [2 * 16 * 4]
    assert [o.name for o in request.outputs] == ["logits"]
    assert len(set(workload.requests)) == len(workload.requests) > 1  # distinct random tensors, cycled
    assert workload.body_bytes == len(workload.requests[0])


@STREAMING
async def test_every_request_is_sent_answered_and_counted(streaming: bool) -> None:
    fake = FakeGrpc()
    async with serve(fake, streaming) as (target, proxy):
        result = await _closed(target, users=4, requests=200)
    assert result.sent >= 200
    assert dict(result.outcomes) == {"200": result.sent}
    assert result.ok == result.sent
    assert fake.served >= result.sent
    assert result.connections == 4
    assert proxy.accepted == 4 + 1  # one channel per user, and the metadata's
    assert fake.streams == (4 if streaming else 0)


@pytest.mark.parametrize(
    ("knobs", "kind"),
    [
        ({"status": grpc.StatusCode.RESOURCE_EXHAUSTED}, "429"),
        ({"status": grpc.StatusCode.INVALID_ARGUMENT}, "400"),
        ({"status": grpc.StatusCode.UNAVAILABLE}, "unavailable"),
    ],
)
@STREAMING
async def test_error_statuses_are_counted_by_kind_and_load_goes_on(
    knobs: dict[str, grpc.StatusCode], kind: str, streaming: bool
) -> None:
    """A unary lane survives a refusal; a stream ended by one is replaced. Either way every request is counted."""
    fake = FakeGrpc(**knobs)
    async with serve(fake, streaming) as (target, _):
        result = await _closed(target, users=2, requests=40)
    assert result.sent >= 40
    assert dict(result.outcomes) == {kind: result.sent}
    if streaming:
        assert fake.streams >= result.sent  # one stream per request: each refusal ended its stream


async def test_in_band_stream_errors_are_counted_and_the_stream_goes_on() -> None:
    fake = FakeGrpc(stream_error="queue full")
    async with serve(fake, streaming=True) as (target, _):
        result = await _closed(target, users=2, requests=40)
    assert dict(result.outcomes) == {"stream_error": result.sent}
    assert fake.streams == 2


@STREAMING
async def test_unanswered_requests_time_out_and_the_step_still_ends(streaming: bool) -> None:
    """Each user's first request times out, its lane is replaced, and the 2 requests sent on new ones time out too.

    As for HTTP, a channel slower to open than the 0.2 s timeout would add a 'connect_failed', never a lost request.
    """
    fake = FakeGrpc(answers_left=0)
    async with serve(fake, streaming) as (target, _):
        driver = ClosedLoop(target, await _workload(target), timeout_s=0.2)
        await driver.start(2)
        driver.measure(duration_s=TIMEOUT_S, max_requests=2)
        result = await driver.finish()
    assert result.ok == 0
    assert result.outcomes["timeout"] == result.sent == 2
    assert set(result.outcomes) <= {"timeout", "connect_failed"}


@STREAMING
async def test_a_cut_connection_is_counted_replaced_and_load_goes_on(streaming: bool) -> None:
    """Both users' requests are held in flight when every connection is reset; then the fake answers again."""
    fake = FakeGrpc(answers_left=10)
    async with serve(fake, streaming) as (target, proxy):
        driver = ClosedLoop(target, await _workload(target), TIMEOUT_S)
        await driver.start(2)
        driver.measure(duration_s=TIMEOUT_S, max_requests=100)
        await fake.until(lambda: fake.requests == 12)  # 10 answered, one held per user
        proxy.cut()
        fake.release()
        result = await driver.finish()
    assert result.sent >= 100  # the load went on after the cut, up to the cap
    assert dict(result.outcomes) == {"200": result.sent - 2, "unavailable": 2}
    assert proxy.accepted == 1 + 2 + 2  # the metadata's channel, then each user's before and after the cut


@STREAMING
async def test_users_whose_server_went_away_keep_trying_and_come_back(streaming: bool) -> None:
    """Connections cut while refusing new ones: every attempt is counted until the server accepts again."""
    fake = FakeGrpc(answers_left=10)
    async with serve(fake, streaming) as (target, proxy):
        driver = ClosedLoop(target, await _workload(target), TIMEOUT_S)
        await driver.start(2)
        driver.measure(duration_s=TIMEOUT_S, max_requests=100)
        await fake.until(lambda: fake.requests == 12)
        proxy.refusing = True
        proxy.cut()
        async with asyncio.timeout(TIMEOUT_S):
            while driver.result.outcomes["connect_failed"] < 4:  # both users failed to reconnect, twice
                await asyncio.sleep(0.01)
        proxy.refusing = False
        fake.release()
        result = await driver.finish()
    assert result.sent >= 100
    assert result.outcomes["unavailable"] == 2
    assert result.outcomes["200"] == result.sent - 2
    assert set(result.outcomes) == {"200", "unavailable", "connect_failed"}


async def test_a_stream_the_server_ends_is_counted_and_reopened() -> None:
    fake = FakeGrpc(end_stream_after=5)
    async with serve(fake, streaming=True) as (target, _):
        result = await _closed(target, users=2, requests=60)
    assert result.sent >= 60
    # every sixth request of a stream meets its end
    assert result.outcomes["connection_closed"] >= result.sent // 6 - 2
    assert set(result.outcomes) == {"200", "connection_closed"}
    assert fake.streams > 2


@STREAMING
async def test_an_open_loop_whose_server_stopped_accepting_fails_the_step(streaming: bool) -> None:
    """Every connection refused: each request due is counted as such, none is sent, and the step fails loudly."""
    fake = FakeGrpc()
    async with serve(fake, streaming) as (target, proxy):
        workload = await _workload(target)
        proxy.refusing = True
        driver = OpenLoop(target, workload, TIMEOUT_S, max_connections=4)
        driver.start(100.0, poisson=False, seed=0)
        driver.measure(duration_s=0.5, max_requests=1_000)
        result = await driver.finish()
    assert result.sent == 0
    assert set(result.outcomes) == {"connect_failed"}
    failure = summarise(OpenLoad(100.0, "constant"), result, 1, 4).failure
    assert failure is not None
    assert "offered 0.0 req/s of the 100 asked" in failure


@STREAMING
async def test_an_open_loop_keeps_offering_load_across_a_cut(streaming: bool) -> None:
    """A pool of 2 lanes, both held in flight and then reset: the schedule goes on over new ones, none is lost."""
    fake = FakeGrpc(answers_left=0)
    async with serve(fake, streaming) as (target, proxy):
        driver = OpenLoop(target, await _workload(target), TIMEOUT_S, max_connections=2)
        driver.start(400.0, poisson=False, seed=0)
        driver.measure(duration_s=TIMEOUT_S, max_requests=60)
        await fake.until(lambda: fake.requests == 2)
        proxy.cut()
        fake.release()
        result = await driver.finish()
    assert result.sent >= 60
    assert dict(result.outcomes) == {"200": result.sent - 2, "unavailable": 2}


@STREAMING
async def test_the_open_loops_lanes_share_channels(streaming: bool) -> None:
    """Six requests held in flight on lanes sharing channels by four: two connections, not six; all answered."""
    fake = FakeGrpc(answers_left=0)
    async with serve(fake, streaming) as (target, proxy):
        shared = dataclasses.replace(target, lanes_per_channel=4)
        workload = await _workload(shared)
        accepted_before = proxy.accepted
        driver = OpenLoop(shared, workload, TIMEOUT_S, max_connections=6)
        driver.start(400.0, poisson=False, seed=0)
        driver.measure(duration_s=TIMEOUT_S, max_requests=6)
        await fake.until(lambda: fake.requests == 6)
        assert proxy.accepted - accepted_before == 2
        fake.release()
        result = await driver.finish()
    assert result.sent >= 6
    assert dict(result.outcomes) == {"200": result.sent}


async def test_in_band_stream_errors_naming_a_status_are_counted_as_it() -> None:
    """cnnserve names the status a refused stream request would have had as a unary call: a full queue is a 429."""
    fake = FakeGrpc(stream_error="queue full", stream_status="RESOURCE_EXHAUSTED")
    async with serve(fake, streaming=True) as (target, _):
        result = await _closed(target, users=2, requests=40)
    assert dict(result.outcomes) == {"429": result.sent}
