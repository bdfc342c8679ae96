"""A startup that fails for a model is reported in one line; any other failure keeps its traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette

from service.api.startup_failure import reporting_startup_failure
from service.errors import ModelLoadError


async def _startup_report(failure: BaseException) -> dict[str, Any]:
    """Run a Starlette app's lifespan whose startup raises ``failure``; the message it sends about it."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise failure
        yield  # pragma: no cover

    app = Starlette(lifespan=lifespan)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with pytest.raises(type(failure)):
        await app({"type": "lifespan", "state": {}}, receive, reporting_startup_failure(send))
    (report,) = sent
    return report


async def test_a_model_that_fails_to_load_is_reported_in_one_line() -> None:
    report = await _startup_report(ModelLoadError("failed to load model 'm': no such file"))
    assert report == {
        "type": "lifespan.startup.failed",
        "message": "startup failed: failed to load model 'm': no such file",
    }


async def test_any_other_failure_keeps_its_traceback() -> None:
    report = await _startup_report(RuntimeError("a bug"))
    assert report["type"] == "lifespan.startup.failed"
    assert report["message"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: a bug" in report["message"]
