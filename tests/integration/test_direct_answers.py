"""Hot requests the front door answers without the ASGI cycle answer exactly as the ASGI way does.

Two in-process servers on one model repository: one at the default settings, which answers a whole hot request
directly (``service/http_direct.py``), and one with the access log on, which sends every request the ASGI way
(``service/api/direct.py`` leaves them all to the middleware then). The same request bytes go to both, and the
answers must match header for header, but for the date and a minted request id, which differ by design. A count of
the direct writes shows which way each server took.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from http_wire import Answer, Wire, request
from inprocess_server import InProcessServer, ModelGate, serving
from live_server import REPO_ROOT

from service import http_direct
from service.settings import Settings

MODEL = "lenet5_digits"
DIGIT = (REPO_ROOT / "samples" / "digits" / "digit-3.png").read_bytes()
PIXELS = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(1, 1, 32, 32)


def _binary(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


_JSON = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.5] * 1024}]})
_INFER = f"/v2/models/{MODEL}/infer"
#: Each request as its bytes, and the status both ways must answer it with.
REQUESTS: dict[str, tuple[bytes, int]] = {
    "v2 binary": (request("POST", _INFER, *_binary(PIXELS)), 200),
    "v2 JSON": (request("POST", _INFER, _JSON), 200),
    "v2 of a version": (request("POST", f"/v2/models/{MODEL}/versions/1/infer", _JSON), 200),
    "v2 gzip body": (request("POST", _INFER, gzip.compress(_JSON), {"Content-Encoding": "gzip"}), 200),
    "v2 unknown model": (request("POST", "/v2/models/no_such_model/infer", _JSON), 404),
    "v2 malformed JSON": (request("POST", _INFER, b'{"inputs": ['), 400),
    "v2 wrong shape": (request("POST", _INFER, *_binary(np.zeros((1, 1, 28, 28), np.float32))), 400),
    "v2 timeout header malformed": (request("POST", _INFER, _JSON, {"X-Request-Timeout-Ms": "soon"}), 400),
    "classify": (request("POST", f"/v1/models/{MODEL}/classify?top_k=3", DIGIT, {"Content-Type": "image/png"}), 200),
    "classify top_k 0": (request("POST", f"/v1/models/{MODEL}/classify?top_k=0", DIGIT), 400),
    "classify not an image": (request("POST", f"/v1/models/{MODEL}/classify", b"not an image"), 400),
    "client request id": (request("POST", _INFER, _JSON, {"X-Request-ID": "client-chosen-42"}), 200),
    "client request id, blanks after": (request("POST", _INFER, _JSON, {"X-Request-ID": "client-chosen-42 \t"}), 200),
    "connection close": (request("POST", _INFER, _JSON, {"Connection": "close"}), 200),
}


class Writes:
    """Counts the front door's direct answers."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture(scope="module")
def servers(model_repository: Path) -> Iterator[tuple[InProcessServer, InProcessServer, Writes]]:
    writes = Writes()
    write = http_direct._write

    def counted(*args: object) -> None:
        writes.count += 1
        write(*args)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("CNNSERVE_")]:
            patch.delenv(key)  # only the settings given here
        patch.setattr(http_direct, "_write", counted)
        settings = Settings(repository_path=model_repository, models=(MODEL,))
        with serving(settings) as direct, serving(settings.model_copy(update={"access_log": True})) as asgi:
            yield direct, asgi, writes


def _exchange(port: int, data: bytes) -> tuple[Answer, bool]:
    """One request on a new connection: the answer, and whether the server then closed the connection."""
    with Wire(port) as wire:
        wire.send(data)
        answer = wire.answer()
        return answer, answer.closes and wire.closed_by_server()


@pytest.mark.parametrize("name", REQUESTS)
def test_a_direct_answer_is_the_answer_of_the_asgi_way(
    servers: tuple[InProcessServer, InProcessServer, Writes], name: str
) -> None:
    direct, asgi, writes = servers
    before = writes.count
    data, status = REQUESTS[name]
    mine, mine_closed = _exchange(direct.port, data)
    theirs, theirs_closed = _exchange(asgi.port, data)
    assert writes.count == before + 1  # the default server answered directly, the access-logging one did not
    assert mine.status == status, mine.body
    assert (mine.status, mine.body, mine_closed) == (theirs.status, theirs.body, theirs_closed)
    ids = mine.headers.pop("x-request-id"), theirs.headers.pop("x-request-id")
    if name.startswith("client request id"):
        assert ids == ("client-chosen-42", "client-chosen-42")
    else:
        assert len(ids[0]) == len(ids[1])  # minted, as the middleware mints them
        assert ids[0] != ids[1]  # one per request
    mine.headers.pop("date"), theirs.headers.pop("date")
    assert mine.headers == theirs.headers
    assert mine_closed == (name == "connection close")


def _waiting_behind(server: InProcessServer) -> int:
    """Requests read and waiting for the answers owed before them, over the server's connections."""
    return sum(len(protocol.pipeline) for protocol in list(server.server.server_state.connections))


def _wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the server never reached the state the test waits for"
        time.sleep(0.005)


def test_a_request_read_while_a_direct_answer_is_under_way_is_answered_after_it(model_repository: Path) -> None:
    gate = ModelGate()
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("CNNSERVE_")]:
            patch.delenv(key)
        gate.install(patch)
        settings = Settings(repository_path=model_repository, models=(MODEL,), inline_batch_us=0)
        with serving(settings) as server, Wire(server.port) as wire:
            with gate.closed():
                wire.send(REQUESTS["v2 JSON"][0])
                asyncio.run(gate.wait_held(1))  # the inference is under way, held at the model
                wire.send(request("GET", "/v2/health/ready"))
                _wait_until(lambda: _waiting_behind(server) == 1)  # read, and queued behind the inference
            first, second = wire.answer(), wire.answer()
    assert not gate.failures, gate.failures
    assert (first.status, first.headers["content-type"]) == (200, "application/json")
    assert orjson.loads(first.body)["model_name"] == MODEL
    assert second.status == 200
    assert second.body != first.body
