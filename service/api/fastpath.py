"""Hot-path dispatch: inference requests skip FastAPI's router and go straight to their handlers.

FastAPI matches a request against its routes one by one and solves each handler's parameters; with two dozen
routes that took about 200 µs a request here, more than a tiny model's inference. The same handler functions stay
registered with FastAPI, so OpenAPI documents them and a request behaves the same whichever way it arrives.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError, render

Handler = Callable[[Request, str], Awaitable[Response]]


@dataclass(frozen=True)
class HotRoute:
    """A POST route served by the fast path; ``pattern`` captures ``model`` and an optional ``version``."""

    pattern: re.Pattern[str]
    handler: Handler

    @classmethod
    def for_template(cls, unversioned: str, handler: Handler) -> HotRoute:
        """From a FastAPI template such as ``/v2/models/{model}/infer``; also matches ``…/versions/{version}…``."""
        prefix, suffix = unversioned.split("{model}")
        pattern = re.escape(prefix) + r"(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+))?" + re.escape(suffix)
        return cls(re.compile(pattern + "$"), handler)


@dataclass(frozen=True)
class RouteSet:
    """A router for FastAPI (documentation, everything else) plus the routes the fast path serves."""

    router: APIRouter
    hot: tuple[HotRoute, ...] = ()


class FastPathMiddleware:
    """Dispatch hot POST routes directly; everything else continues to FastAPI.

    Args:
        app: The FastAPI application (inner layers).
        routes: The hot routes, tried in order.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[HotRoute]) -> None:
        self.app = app
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for route in self.routes:
                match = route.pattern.match(path)
                if match is None:
                    continue
                model, version = match.group("model", "version")
                scope["path_params"] = {"model": model} if version is None else {"model": model, "version": version}
                try:
                    response = await route.handler(Request(scope, receive, send), model)
                except ServiceError as err:
                    response = render(err)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
