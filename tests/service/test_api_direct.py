"""Which hot requests the app answers for the front door, and how (``service.api.direct``).

A hot route whose handler is the test's own stands for the inference routes; the requests are ASGI scopes and
receives, as ``service/http_direct.py`` makes them. That the answers match the ASGI way's on the real routes is
``tests/integration/test_direct_answers.py``.
"""

from __future__ import annotations

import logging

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from service.api.direct import DirectAnswers
from service.api.fastpath import FastPathMiddleware
from service.api.middleware import id_and_authorization
from service.api.responses import BytesResponse
from service.api.routes import Route
from service.errors import NotFound
from service.logs import REQUEST_ID

TOKEN = b"s3cret"


async def handler(request: Request, model: str, version: str | None) -> Response:
    body = (await request.receive())["body"]
    if model == "missing":
        raise NotFound(f"no model {model}")
    if model == "broken":
        raise RuntimeError("the handler's own bug")
    return BytesResponse(orjson.dumps([model, version, REQUEST_ID.get(), body.decode()]), b"application/json")


async def never(scope: object, receive: object, send: object) -> None:
    raise AssertionError("a direct answer never reaches the inner app")


def answers(token: bytes | None = None, access_log: bool = False) -> DirectAnswers:
    route = Route("POST", "/v2/models/{model}/infer", handler, "infer", hot=True, versioned=True)
    versioned = Route("POST", "/v2/models/{model}/versions/{version}/infer", handler, "infer", hot=True)
    return DirectAnswers(FastPathMiddleware(never, (route, versioned)), token, access_log)


def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": headers}


async def ask(direct: DirectAnswers, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[Response, bytes]:
    taken = direct.take("POST", path, headers)
    assert taken is not None

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"tensor", "more_body": False}

    return await direct.answer(taken, scope(path, headers), receive), taken.request_id


def test_only_hot_routes_are_taken() -> None:
    direct = answers()
    assert direct.take("POST", "/v2/models/m/infer", []) is not None
    assert direct.take("POST", "/v2/models/m/versions/2/infer", []) is not None
    assert direct.take("GET", "/v2/models/m/infer", []) is None
    assert direct.take("POST", "/v2/models/m/ready", []) is None


def test_with_a_token_only_a_request_that_carries_it_is_taken() -> None:
    direct = answers(token=TOKEN)
    assert direct.take("POST", "/v2/models/m/infer", []) is None  # the middleware answers 401
    assert direct.take("POST", "/v2/models/m/infer", [(b"authorization", b"Bearer wrong")]) is None
    assert direct.take("POST", "/v2/models/m/infer", [(b"authorization", b"bearer  " + TOKEN)]) is not None


def test_of_several_authorization_headers_the_last_decides_as_in_the_middleware() -> None:
    direct = answers(token=TOKEN)
    first_right = [(b"authorization", b"Bearer " + TOKEN), (b"authorization", b"Bearer wrong")]
    assert direct.take("POST", "/v2/models/m/infer", first_right) is None
    assert direct.take("POST", "/v2/models/m/infer", first_right[::-1]) is not None
    assert id_and_authorization(first_right) == (b"", b"Bearer wrong")


def test_nothing_is_taken_while_the_access_log_is_on() -> None:
    assert answers(access_log=True).take("POST", "/v2/models/m/infer", []) is None


@pytest.mark.parametrize("client_id", [b"tab\tinside", b"bell\x07"])
def test_a_request_id_uvicorn_would_not_echo_as_it_came_goes_the_asgi_way(client_id: bytes) -> None:
    assert answers().take("POST", "/v2/models/m/infer", [(b"x-request-id", client_id)]) is None


async def test_a_request_id_never_echoed_is_replaced_here_too() -> None:
    response, request_id = await ask(answers(), "/v2/models/m/infer", [(b"x-request-id", "caf\u00e9".encode())])
    assert request_id.isascii()
    assert orjson.loads(response.body)[2] == request_id.decode()


async def test_the_handler_answers_with_the_request_id_set_while_it_runs() -> None:
    response, request_id = await ask(answers(), "/v2/models/m/versions/3/infer", [(b"x-request-id", b"abc-1")])
    assert request_id == b"abc-1"
    assert orjson.loads(response.body) == ["m", "3", "abc-1", "tensor"]
    assert REQUEST_ID.get() != "abc-1"  # reset once answered


async def test_a_minted_request_id_is_the_one_the_handler_saw() -> None:
    response, request_id = await ask(answers(), "/v2/models/m/infer", [])
    assert orjson.loads(response.body) == ["m", None, request_id.decode(), "tensor"]


async def test_a_service_error_is_rendered() -> None:
    response, _ = await ask(answers(), "/v2/models/missing/infer", [])
    assert response.status_code == 404
    assert orjson.loads(response.body)["code"] == "not_found"


async def test_any_other_exception_is_logged_and_answered_500_quoting_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        response, request_id = await ask(answers(), "/v2/models/broken/infer", [(b"x-request-id", b"id-9")])
    assert response.status_code == 500
    assert "id-9" in orjson.loads(response.body)["error"]
    assert "unhandled error serving POST /v2/models/broken/infer" in caplog.text
    assert "the handler's own bug" in caplog.text
