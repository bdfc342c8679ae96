"""Hot-path dispatch: inference requests skip FastAPI's router and go straight to their handlers.

FastAPI matches a request against its routes one by one and solves each handler's parameters; with two dozen
routes that took about 200 µs a request here, more than a tiny model's inference. The routes served here are the
``hot`` ones of the route table, which FastAPI also holds (for OpenAPI and any request this path does not match),
so a request behaves the same whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.routes import Route
from service.errors import ServiceError, render


class FastPathMiddleware:
    """Dispatch hot POST routes directly; everything else continues to FastAPI.

    Args:
        app: The FastAPI application (inner layers).
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
