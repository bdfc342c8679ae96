"""Starting the service: the default model out of the box, JSON logs, refusing a config that disagrees with its
graph (naming the field), and workers that keep the front door's limits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from http_wire import Wire, request
from live_server import REPO_ROOT, start_server

from bench.servers import free_port

SAMPLES = REPO_ROOT / "samples" / "digits"


def test_default_repository_serves_the_digits_model_with_json_logs(tmp_path: Path) -> None:
    server = start_server(None, tmp_path / "default.log", "--log-format", "json")
    try:
        assert [m["name"] for m in httpx.get(f"{server.url}/v1/models").json()["models"]] == ["lenet5_digits"]
        for digit in (3, 7):
            response = httpx.post(  # as `curl --data-binary @digit-7.png …/classify` sends it
                f"{server.url}/v1/models/lenet5_digits/classify",
                content=(SAMPLES / f"digit-{digit}.png").read_bytes(),
                headers={"Content-Type": "application/x-www-form-urlencoded", "X-Request-ID": f"sample-{digit}"},
            )
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["predictions"][0]["label"] == str(digit)
        httpx.post(f"{server.url}/v2/repository/models/lenet5_digits/unload", headers={"X-Request-ID": "ops-1"})
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message", "request_id"} <= set(records[0])
    unloaded = [r for r in records if r["message"] == "model 'lenet5_digits' unloaded"]
    assert unloaded, "no worker logged the unload"
    assert {r["request_id"] for r in unloaded} == {"ops-1"}  # every worker unloads, each under the client's id


def test_a_config_disagreeing_with_its_graph_refuses_to_start_naming_the_field(
    tmp_path: Path, committed_models: Path
) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(committed_models / "lenet5_digits", repository / "lenet5_digits")
    config_path = repository / "lenet5_digits" / "config.json"
    config = json.loads(config_path.read_text())
    config["output"][0]["dims"] = [12]
    config["labels"] = [str(i) for i in range(12)]
    config_path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "service", "--repository", str(repository), "--port", str(free_port())]
    command += ["--grpc-port", "0"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3  # uvicorn's startup failure, the first failing worker's status
    assert "output[0] 'logits': dims[0] is 12 but the ONNX graph has 10" in result.stderr
    assert "Traceback" not in result.stderr  # the reason in one line (service/api/startup_failure.py)


def test_cli_help_lists_the_flags_and_the_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for flag in ("--repository", "--host", "--port", "--log-format", "--log-level", "CNNSERVE_"):
        assert flag in result.stdout


@pytest.mark.parametrize("flag", ["--port=notanumber", "--log-format=xml"])
def test_bad_flags_are_refused(flag: str) -> None:
    result = subprocess.run([sys.executable, "-m", "service", flag], cwd=REPO_ROOT, capture_output=True, timeout=60)
    assert result.returncode == 2


def test_workers_serve_behind_the_same_connection_limits(tmp_path: Path) -> None:
    """The front door's protocol travels to every worker process (uvicorn pickles it into each)."""
    server = start_server(None, tmp_path / "workers.log", "--workers", "2", max_header_bytes="2048")
    try:
        for _ in range(4):  # connections land on either worker
            with Wire(server.port) as wire:
                wire.send(request("GET", "/v2/health/ready", headers={"X-Big": "a" * 4096}))
                answer = wire.answer()
                assert (answer.status, answer.code) == (431, "headers_too_large")
            assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    finally:
        assert server.stop() == 0, server.log()[-3000:]
