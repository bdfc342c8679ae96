"""Hot-path dispatch: HTTP requests enter through the service's own layers, and inference skips FastAPI entirely.

FastAPI matches a request against its routes one by one and solves each handler's parameters; with two dozen
routes that took about 200 µs a request here, more than a tiny model's inference. Its middleware stack (error
page, telemetry hooks, body limit) cost a few microseconds more per layer. So ``ServiceApp`` hands every HTTP
request to ``front``, the service's pure-ASGI layers (request id and auth, then ``FastPathMiddleware``, then the
whole-server fan-out), and only what those do not answer reaches FastAPI. The routes served here are the ``hot``
ones of the route table, which FastAPI also holds (for OpenAPI), so a request behaves the same whichever way it
arrives.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.routes import Handler, Route
from service.api.startup_failure import reporting_startup_failure
from service.errors import ServiceError, render

#: A hot route found for a request: its handler and its path parameters.
Matched = tuple[Handler, dict[str, str | None]]


class FastPathMiddleware:
    """Dispatch hot POST routes directly; everything else continues to the inner app.

    Args:
        app: The inner layers (the whole-server fan-out, then FastAPI).
        routes: The hot routes, tried in order; each path template is compiled to one regular expression.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = tuple((route.pattern(), route.handler) for route in routes)

    def match(self, method: str, path: str) -> Matched | None:
        """The hot route for ``method`` and ``path``, with its path parameters; None when there is none."""
        if method == "POST":
            for pattern, handler in self.routes:
                found = pattern.match(path)
                if found is not None:
                    return handler, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        response = await answer(found, Request(scope, receive, send))
        await response(scope, receive, send)


async def answer(found: Matched, request: Request) -> Response:
    """The hot route's response to ``request``: its handler's, or its ``ServiceError`` rendered."""
    handler, parameters = found
    try:
        return await handler(request, **parameters)
    except ServiceError as err:
        return render(err)


class ServiceApp(FastAPI):
    """FastAPI whose HTTP requests go through ``front`` first; lifespan (and anything not HTTP) goes straight in.

    ``front`` is set once the app is assembled (``service.main.create_app``) and ends in ``framework``;
    ``hot_routes`` are the routes its ``FastPathMiddleware`` serves.
    """

    front: ASGIApp | None = None
    hot_routes: tuple[Route, ...] = ()

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own stack: routing, dependency solving, its exception handlers."""
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            await self.front(scope, receive, send)
        elif scope["type"] == "lifespan":
            await super().__call__(scope, receive, reporting_startup_failure(send))
        else:
            await super().__call__(scope, receive, send)
