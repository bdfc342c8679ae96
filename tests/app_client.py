"""The real app in process, for tests that need its routes but not a socket: created on a repository, started
(models loaded) around a block, and reached through httpx's ASGI transport.

``raise_app_exceptions``: an exception escaping the app fails the test instead of becoming a 500 the test might
accept. Tests that need the app object itself (its state, its admission) build their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from service.main import create_app
from service.settings import Settings


@asynccontextmanager
async def serving(repository: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app serving ``repository`` with one preprocessing thread and ``settings``."""
    app = create_app(Settings(repository_path=repository, **({"preprocess_threads": 1} | settings)))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c
