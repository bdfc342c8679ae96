"""Logging: JSON lines carry the request id; text lines too."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from service.logs import REQUEST_ID, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = False


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_records_carry_the_request_id(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format, "INFO")
    token = REQUEST_ID.set("req-123")
    try:
        logging.getLogger("service.test").warning("model %s is %d%% warm", "m", 50)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("service.test").exception("failed")
    finally:
        REQUEST_ID.reset(token)
    lines = capsys.readouterr().err.strip().splitlines()
    if log_format == "json":
        first = json.loads(lines[0])
        assert first["message"] == "model m is 50% warm"
        assert first["request_id"] == "req-123"
        assert first["level"] == "WARNING"
        assert "ValueError: boom" in json.loads(lines[1])["exception"]
    else:
        assert "[req-123] model m is 50% warm" in lines[0]
