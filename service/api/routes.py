"""The route table: each HTTP route declared once, and the FastAPI routes (with their OpenAPI docs) made from it.

A ``Route`` names its method, path template, handler and documentation (its query and header parameters too; the
headers every route or every body-reading route takes are added here); ``versioned`` adds its
``…/{model}/versions/{version}…`` twin and ``hot`` hands it to the fast path (``fastpath.py``), which compiles the
same declaration into a regular expression. A handler is ``handler(request, **path_parameters) -> Response``, on
either path; on a route with a twin, ``version`` is None when the path has none.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Handler = Callable[..., Awaitable[Response]]
#: Error statuses a route may answer, each with its OpenAPI response object (``{"description": …}``).
Responses = Mapping[int, Mapping[str, Any]]

#: OpenAPI descriptions of the path parameters a template may use.
PATH_PARAMETERS = {
    "model": "Model name: its folder in the model repository.",
    "version": "Model version: one of those the model's version_policy serves (without it: the newest).",
}
_VERSION_SEGMENT = "/versions/{version}"
_PARAMETER = re.compile(r"\{(\w+)\}")
#: What a path parameter matches on the fast path: a ':' ends it, so '{model}:predict' cannot swallow ':predict'.
_SEGMENT = r"[^/:]+"


@dataclass(frozen=True)
class QueryParameter:
    """A query parameter, for the documentation only: handlers read and check it themselves, on either path."""

    name: str
    description: str
    schema: Mapping[str, Any]
    location: ClassVar[str] = "query"

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        return {
            "name": self.name,
            "in": self.location,
            "required": False,
            "description": self.description,
            "schema": dict(self.schema),
        }


@dataclass(frozen=True)
class HeaderParameter(QueryParameter):
    """A request header a handler (or the middleware) reads, for the documentation only, like a query parameter."""

    location: ClassVar[str] = "header"


#: Read on every route: the middleware echoes it, or mints one when it is absent or unusable.
REQUEST_ID = HeaderParameter(
    "X-Request-ID",
    "The request's id, echoed in the response and the log; up to 128 ASCII characters, else a new one is minted.",
    {"type": "string"},
)
#: Read on every POST route: each reads its body through ``body.read_body``.
CONTENT_ENCODING = HeaderParameter(
    "Content-Encoding",
    "The body's compression: gzip, x-gzip, deflate or identity (CNNSERVE_MAX_BODY_BYTES holds after inflating).",
    {"type": "string", "enum": ["gzip", "x-gzip", "deflate", "identity"]},
)


@dataclass(frozen=True)
class Route:
    """One route, declared once.

    Attributes:
        method: ``GET`` or ``POST``.
        path: The path template; ``{model}`` and ``{version}`` are its possible parameters.
        handler: ``handler(request, **path_parameters) -> Response``.
        summary: The OpenAPI summary.
        responses: Error statuses and their descriptions, for OpenAPI.
        body: The OpenAPI ``requestBody`` object, when the route reads a body.
        query: Query parameters the handler reads.
        headers: Request headers the handler reads (besides ``REQUEST_ID`` and, on POST, ``CONTENT_ENCODING``).
        response_class: What a success answers with, for OpenAPI's media type (JSON unless said otherwise).
        hot: Served by the fast path, skipping FastAPI's router (POST only).
        versioned: Also served at the path with ``/versions/{version}`` after ``{model}``.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    responses: Responses = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    query: tuple[QueryParameter, ...] = ()
    headers: tuple[HeaderParameter, ...] = ()
    response_class: type[Response] = JSONResponse
    hot: bool = False
    versioned: bool = False

    def __post_init__(self) -> None:
        unknown = set(_PARAMETER.findall(self.path)) - set(PATH_PARAMETERS)
        if unknown:
            raise ValueError(f"route {self.path}: parameters {sorted(unknown)} need a description in PATH_PARAMETERS")
        if self.versioned and "{model}" not in self.path:
            raise ValueError(f"route {self.path}: a versioned route needs a {{model}} to put /versions/ after")
        if self.hot and self.method != "POST":
            raise ValueError(f"route {self.method} {self.path}: the fast path serves POST routes only")

    def paths(self) -> tuple[str, ...]:
        """The path template, and its ``/versions/{version}`` twin when versioned."""
        if not self.versioned:
            return (self.path,)
        before, model, after = self.path.partition("{model}")
        return self.path, before + model + _VERSION_SEGMENT + after

    def arguments(self) -> tuple[str, ...]:
        """The path parameters the handler takes: those of the longest path."""
        return tuple(_PARAMETER.findall(self.paths()[-1]))

    def pattern(self) -> re.Pattern[str]:
        """One regular expression for the path and its twin; ``version`` is None when the request has none."""
        before, model, after = self.path.partition("{model}")
        twin = f"(?:{_regex(_VERSION_SEGMENT)})?" if self.versioned else ""
        return re.compile(_regex(before + model) + twin + _regex(after) + "$")

    def openapi_extra(self, path: str) -> dict[str, Any]:
        """Parameters (path ones first, from the template, then query, then headers) and request body, for OpenAPI."""
        parameters = [_path_parameter(name) for name in _PARAMETER.findall(path)]
        common = (REQUEST_ID, CONTENT_ENCODING) if self.method == "POST" else (REQUEST_ID,)
        parameters += [p.openapi() for p in (*self.query, *self.headers, *common)]
        extra: dict[str, Any] = {"parameters": parameters}
        if self.body is not None:
            extra["requestBody"] = dict(self.body)
        return extra


def _regex(template: str) -> str:
    """A path template as a regular expression, one named group per parameter."""
    parts = _PARAMETER.split(template)  # literal, name, literal, …
    return "".join(f"(?P<{part}>{_SEGMENT})" if i % 2 else re.escape(part) for i, part in enumerate(parts))


def _path_parameter(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": PATH_PARAMETERS[name],
        "schema": {"type": "string"},
    }


@dataclass(frozen=True)
class RouteGroup:
    """Routes documented under one OpenAPI tag."""

    tag: str
    routes: tuple[Route, ...]


def _endpoint(route: Route) -> Callable[[Request], Awaitable[Response]]:
    """The FastAPI endpoint of a route: hands the path parameters to the handler (None for an absent version)."""
    handler, names = route.handler, route.arguments()

    async def endpoint(request: Request) -> Response:
        params = request.path_params
        return await handler(request, **{name: params.get(name) for name in names})

    return endpoint


def install(app: FastAPI, groups: tuple[RouteGroup, ...]) -> None:
    """Add every route of ``groups`` to ``app``, in order, each path followed by its versioned twin.

    Order matters where templates overlap: a route is matched before any declared after it.
    """
    for group in groups:
        for route in group.routes:
            endpoint = _endpoint(route)
            for path in route.paths():
                app.add_api_route(
                    path,
                    endpoint,
                    methods=[route.method],
                    name=route.handler.__name__,
                    summary=route.summary,
                    tags=[group.tag],
                    responses={status: dict(doc) for status, doc in route.responses.items()} or None,
                    response_class=route.response_class,
                    openapi_extra=route.openapi_extra(path),
                )


def hot_routes(groups: tuple[RouteGroup, ...]) -> tuple[Route, ...]:
    """The routes the fast path serves, in declaration order."""
    return tuple(route for group in groups for route in group.routes if route.hot)
