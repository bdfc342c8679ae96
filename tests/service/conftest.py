"""Unit tests of the serving core: every test in this folder carries the ``service`` marker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_models import tiny_config, tiny_model_bytes, write_model


@pytest.fixture
def tiny_repository(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_repository(name="tiny", **config_overrides)`` writes a one-model repository, returns it."""

    def make(name: str = "tiny", model: bytes | None = None, **overrides: Any) -> Path:
        data = model if model is not None else tiny_model_bytes()
        write_model(tmp_path, name, data, tiny_config(name, data, **overrides))
        return tmp_path

    return make
