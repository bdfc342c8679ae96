"""Settings come from CNNSERVE_* environment variables; constructor arguments (CLI flags) win."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import DEFAULT_REPOSITORY, Settings


def test_defaults_serve_the_repositorys_own_models_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CNNSERVE_"):
            monkeypatch.delenv(key)
    settings = Settings()
    assert settings.repository_path == DEFAULT_REPOSITORY
    assert Path(__file__).resolve().parents[2] / "models" == DEFAULT_REPOSITORY
    assert (settings.host, settings.port, settings.grpc_port, settings.auth_token, settings.max_queue_size) == (
        "127.0.0.1",
        8000,
        8001,  # Triton's
        None,
        None,
    )


def test_environment_variables_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNSERVE_REPOSITORY_PATH", str(tmp_path))
    monkeypatch.setenv("CNNSERVE_PORT", "9123")
    monkeypatch.setenv("CNNSERVE_MODELS", "a, b,")
    monkeypatch.setenv("CNNSERVE_PROVIDERS", "cuda,cpu")
    monkeypatch.setenv("CNNSERVE_MAX_QUEUE_DELAY_US", "2500")
    monkeypatch.setenv("CNNSERVE_AUTH_TOKEN", "s3cret")
    monkeypatch.setenv("CNNSERVE_LOG_FORMAT", "json")
    settings = Settings()
    assert settings.repository_path == tmp_path
    assert settings.port == 9123
    assert settings.models == ("a", "b")
    assert settings.providers == ("cuda", "cpu")
    assert settings.max_queue_delay_us == 2500
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)  # secrets stay out of logs
    assert settings.log_format == "json"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNSERVE_PORT", "9123")
    assert Settings(port=7000).port == 7000


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CNNSERVE_PORT", "99999"), ("CNNSERVE_LOG_FORMAT", "xml"), ("CNNSERVE_MAX_QUEUE_SIZE", "0")],
)
def test_invalid_values_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("CNNSERVE_").lower()):
        Settings()


def test_every_field_is_documented() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []
