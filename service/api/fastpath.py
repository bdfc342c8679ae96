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
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.routes import Route
from service.api.startup_failure import reporting_startup_failure
from service.errors import ServiceError, render


class FastPathMiddleware:
    """Dispatch hot POST routes directly; everything else continues to the inner app.

    Args:
        app: The inner layers (the whole-server fan-out, then FastAPI).
        routes: The hot routes, tried in order; each path template is compiled to one regular expression.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = tuple((route.pattern(), route.handler) for route in routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for pattern, handler in self.routes:
                match = pattern.match(path)
                if match is None:
                    continue
                try:
                    response = await handler(Request(scope, receive, send), **match.groupdict())
                except ServiceError as err:
                    response = render(err)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
