"""The Prometheus scrape endpoint, ``GET /metrics``: every metric of the app's ``CollectorRegistry``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from service.api.routes import Route, RouteGroup


class MetricsRoutes:
    """``/metrics``, bound to the registry the service's metrics live in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    async def prometheus(self, request: Request) -> Response:
        """The text exposition format, 0.0.4."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def routes(self) -> RouteGroup:
        """The one scrape route."""
        return RouteGroup(
            "metrics",
            (
                Route(
                    "GET",
                    "/metrics",
                    self.prometheus,
                    "Prometheus metrics (text format 0.0.4).",
                    response_class=PlainTextResponse,
                ),
            ),
        )
