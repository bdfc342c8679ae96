"""Integration tests: every test here carries the ``integration`` marker and talks to a real uvicorn process.

``server`` (one per session) serves lenet5_digits and small_cnn from the shared ``model_repository`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import MAX_BODY_BYTES, MAX_IMAGE_PIXELS, Reference, Server, start_server


@pytest.fixture(scope="session")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: lenet5_digits and small_cnn, no auth, small body and pixel limits, load/unload allowed."""
    running = start_server(
        model_repository,
        tmp_path_factory.mktemp("logs") / "server.log",
        max_body_bytes=str(MAX_BODY_BYTES),
        max_image_pixels=str(MAX_IMAGE_PIXELS),
        model_control="explicit",
    )
    yield running
    assert running.stop() == 0, running.log()[-3000:]


@pytest.fixture(scope="session")
def reference(model_repository: Path) -> Reference:
    return Reference(model_repository)
