"""The route table: each declaration yields its FastAPI routes (with OpenAPI docs) and, when hot, its fast path."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.api.fastpath import FastPathMiddleware, ServiceApp
from service.api.rest import DEFAULT_TOP_K
from service.api.routes import Route
from service.main import create_app
from service.settings import Settings


async def _handler(request: Request, model: str, version: str | None) -> Response:
    return Response(f"{model} {version}")


def test_a_versioned_route_has_a_twin_and_one_pattern_for_both() -> None:
    route = Route("POST", "/v1/models/{model}:predict", _handler, "predict", hot=True, versioned=True)
    assert route.paths() == ("/v1/models/{model}:predict", "/v1/models/{model}/versions/{version}:predict")
    assert route.arguments() == ("model", "version")
    pattern = route.pattern()
    for path, groups in (
        ("/v1/models/m:predict", {"model": "m", "version": None}),
        ("/v1/models/m/versions/2:predict", {"model": "m", "version": "2"}),
    ):
        match = pattern.match(path)
        assert match is not None
        assert match.groupdict() == groups
    assert pattern.match("/v1/models/m:predict/more") is None


def test_declarations_that_cannot_be_served_are_refused() -> None:
    with pytest.raises(ValueError, match="fast path serves POST routes only"):
        Route("GET", "/v2/models/{model}", _handler, "metadata", hot=True)
    with pytest.raises(ValueError, match="needs a \\{model\\}"):
        Route("GET", "/v2/health/ready", _handler, "ready", versioned=True)
    with pytest.raises(ValueError, match=r"parameters \['name'\] need a description"):
        Route("GET", "/things/{name}", _handler, "things")


def _hot_routes(app: FastAPI) -> tuple[Route, ...]:
    assert isinstance(app, ServiceApp)
    return app.hot_routes


def test_openapi_lists_every_versioned_twin_with_its_parameters() -> None:
    app = create_app(Settings())
    paths = app.openapi()["paths"]
    for unversioned, twin in (
        ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"),
        ("/v2/models/{model}/config", "/v2/models/{model}/versions/{version}/config"),
        ("/v2/models/{model}/stats", "/v2/models/{model}/versions/{version}/stats"),
        ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"),
        ("/v2/models/{model}/ready", "/v2/models/{model}/versions/{version}/ready"),
        ("/v1/models/{model}:predict", "/v1/models/{model}/versions/{version}:predict"),
        ("/v1/models/{model}/classify", "/v1/models/{model}/versions/{version}/classify"),
    ):
        (operation,) = paths[unversioned].values()
        (twin_operation,) = paths[twin].values()
        assert [(p["name"], p["in"]) for p in operation["parameters"] if p["in"] == "path"] == [("model", "path")]
        twin_parameters = [(p["name"], p["in"], p["required"]) for p in twin_operation["parameters"]]
        assert twin_parameters[:2] == [("model", "path", True), ("version", "path", True)]
    for path in ("/v1/models/{model}/classify", "/v1/models/{model}/versions/{version}/classify"):
        (top_k,) = [p for p in paths[path]["post"]["parameters"] if p["in"] == "query"]
        assert top_k["name"] == "top_k"
        assert top_k["schema"] == {"type": "integer", "minimum": 1, "default": DEFAULT_TOP_K}
        assert f"default {DEFAULT_TOP_K}" in top_k["description"]
    hot = {path for route in _hot_routes(app) for path in route.paths()}
    assert hot == {
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/{version}/infer",
        "/v1/models/{model}:predict",
        "/v1/models/{model}/versions/{version}:predict",
        "/v1/models/{model}/classify",
        "/v1/models/{model}/versions/{version}/classify",
    }
    assert all("post" in paths[path] for path in hot)  # FastAPI holds them too: documented, and the slow path


def test_openapi_documents_the_headers_each_route_reads_and_metrics_as_plain_text() -> None:
    paths = create_app(Settings()).openapi()["paths"]

    def headers(path: str, method: str) -> set[str]:
        return {p["name"] for p in paths[path][method]["parameters"] if p["in"] == "header"}

    timeout, encoding, request_id = "X-Request-Timeout-Ms", "Content-Encoding", "X-Request-ID"
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        assert headers(path, "post") == {timeout, encoding, request_id, "Inference-Header-Content-Length"}
    for path in ("/v1/models/{model}/classify", "/v1/models/{model}:predict"):
        assert headers(path, "post") == {timeout, encoding, request_id}
    assert headers("/v2/repository/index", "post") == {encoding, request_id}  # every POST reads a body
    assert headers("/v2/health/ready", "get") == {request_id}
    assert headers("/metrics", "get") == {request_id}
    (timeout_doc,) = [p for p in paths["/v2/models/{model}/infer"]["post"]["parameters"] if p["name"] == timeout]
    assert "1 ms deadline resolution" in timeout_doc["description"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(paths["/v2/health/ready"]["get"]["responses"]["200"]["content"]) == ["application/json"]


@pytest.fixture
async def app(tiny_repository: Callable[..., Path]) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(repository_path=tiny_repository(), preprocess_threads=1))
    async with app.router.lifespan_context(app):
        yield app


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


_REQUESTS = {  # a valid body for each hot route, by its unversioned template
    "/v2/models/{model}/infer": (
        b'{"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [' + b"0," * 191 + b"0]}]}",
        {"Content-Type": "application/json"},
    ),
    "/v1/models/{model}/classify": (_png(), {"Content-Type": "image/png"}),
    "/v1/models/{model}:predict": (
        b'{"instances": [{"b64": "' + base64.b64encode(_png()) + b'"}]}',
        {"Content-Type": "application/json"},
    ),
}


async def test_every_hot_route_and_its_twin_is_answered_by_the_fast_path(app: FastAPI) -> None:
    fell_through: list[str] = []

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        fell_through.append(scope["path"])
        await Response(status_code=418)(scope, receive, send)

    routes = _hot_routes(app)
    assert {route.path for route in routes} == set(_REQUESTS)
    transport = httpx.ASGITransport(app=FastPathMiddleware(router, routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for route in routes:
            body, headers = _REQUESTS[route.path]
            for template in route.paths():
                path = template.replace("{model}", "tiny").replace("{version}", "1")
                response = await client.post(path, content=body, headers=headers)
                assert response.status_code == 200, (path, response.text)
        assert (await client.post("/v2/repository/index")).status_code == 418  # not hot: on to FastAPI
        assert (await client.get("/v2/models/tiny/infer")).status_code == 418  # GET: never the fast path
    assert fell_through == ["/v2/repository/index", "/v2/models/tiny/infer"]
