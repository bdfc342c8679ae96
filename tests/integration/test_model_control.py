"""Repository control on a real server: the default mode (none) refuses load and unload with 403, poll mode follows
the folder (a new model, a new version, a removed model, a broken one), and model names from raw URLs ('..', '.',
300 bytes) are 404 on every route without echoing server paths.

Waits poll the index within a bounded time (the poll interval is 0.2 s); nothing races the poller with a sleep.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live_server import Server, start_server

th = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "lenet5_digits"
CHANGE_TIMEOUT_S = 60.0  # generous: a load on a loaded 2-core machine; a poll runs every 0.2 s


def raw_request(server: Server, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """Send ``path`` exactly as written (httpx and tritonclient would normalise '.' and '..' away)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("name", ["..", ".", "x" * 300, "%2e%2e"])
def test_a_name_from_a_raw_url_that_no_model_can_have_is_404_without_server_paths(
    server: Server, model_repository: Path, name: str
) -> None:
    for method, path in (
        ("GET", f"/v2/models/{name}/ready"),
        ("GET", f"/v2/models/{name}"),
        ("GET", f"/v2/models/{name}/config"),
        ("POST", f"/v2/models/{name}/infer"),
        ("POST", f"/v1/models/{name}/classify"),
        ("POST", f"/v2/repository/models/{name}/load"),
        ("POST", f"/v2/repository/models/{name}/unload"),
    ):
        status, error = raw_request(server, method, path)
        assert status == 404, (path[:60], error)
        assert error["code"] == "model_not_found"
        assert str(model_repository) not in error["error"]
    assert raw_request(server, "GET", f"/v2/models/{MODEL}/ready")[0] == 200


def copy_model(source: Path, repository: Path, name: str, edit: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Put a copy of ``source`` into ``repository`` as ``name``: built aside, then renamed in (as operators should)."""
    aside = repository.parent / f".{name}.incoming"
    shutil.copytree(source, aside)
    config = json.loads((aside / "config.json").read_text())
    config["name"] = name
    if edit is not None:
        edit(config)
    (aside / "config.json").write_text(json.dumps(config))
    os.replace(aside, repository / name)


@pytest.fixture
def repository(tmp_path: Path, committed_models: Path) -> Path:
    repo = tmp_path / "repository"
    repo.mkdir()
    shutil.copytree(committed_models / MODEL, repo / MODEL)
    return repo


@pytest.fixture
def polling(repository: Path, tmp_path: Path) -> Iterator[Server]:
    running = start_server(repository, tmp_path / "poll.log", model_control="poll", repository_poll_s="0.2")
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def index(server: Server) -> list[dict[str, str]]:
    response = httpx.post(f"{server.url}/v2/repository/index", timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json())


def wait_for_index(server: Server, done: Callable[[list[dict[str, str]]], bool]) -> list[dict[str, str]]:
    """The index once ``done`` holds for it; fails, quoting the last index and the log, after CHANGE_TIMEOUT_S."""
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    rows = index(server)
    while not done(rows):
        if time.monotonic() > deadline:
            pytest.fail(f"index never changed as expected: {rows}\n{server.log()[-2000:]}")
        time.sleep(0.05)
        rows = index(server)
    return rows


def served(rows: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(r["name"], r["version"]) for r in rows if r["state"] == "READY" and "version" in r}


def digits(client: Any, model: str, version: str = "") -> np.ndarray:
    x = np.ones((1, 1, 32, 32), np.float32)
    t = th.InferInput("input", list(x.shape), "FP32")
    t.set_data_from_numpy(x, binary_data=True)
    return np.asarray(client.infer(model, [t], model_version=version).as_numpy("logits"))


def test_the_default_mode_refuses_load_and_unload(repository: Path, tmp_path: Path) -> None:
    running = start_server(repository, tmp_path / "none.log", model_control="none")
    try:
        with th.InferenceServerClient(running.address) as client:
            for call in (client.unload_model, client.load_model):
                with pytest.raises(InferenceServerException, match="CNNSERVE_MODEL_CONTROL is 'none'") as caught:
                    call(MODEL)
                assert caught.value.status() == "403"
            override = json.dumps({"name": MODEL, "instance_group": {"count": 100}})
            with pytest.raises(InferenceServerException, match="CNNSERVE_MODEL_CONTROL is 'none'"):
                client.load_model(MODEL, config=override)
            assert client.is_model_ready(MODEL)
            assert [r["state"] for r in client.get_model_repository_index()] == ["READY"]
    finally:
        assert running.stop() == 0


def test_poll_mode_follows_the_folder(polling: Server, repository: Path) -> None:
    source = repository / MODEL
    with th.InferenceServerClient(polling.address) as client:
        before = digits(client, MODEL)
        with pytest.raises(InferenceServerException, match="CNNSERVE_MODEL_CONTROL is 'poll'") as caught:
            client.unload_model(MODEL)
        assert caught.value.status() == "403"

        copy_model(source, repository, "digits_b")  # a new model
        wait_for_index(polling, lambda rows: ("digits_b", "1") in served(rows))
        np.testing.assert_allclose(digits(client, "digits_b"), before, rtol=1e-5)

        aside = repository.parent / "v2.incoming"  # version 2: the same weights; the policy serves both
        shutil.copytree(source / "1", aside)
        os.replace(aside, source / "2")
        config = json.loads((source / "config.json").read_text())
        config["versions"]["2"] = config["versions"]["1"]
        config["version_policy"] = {"all": {}}
        (repository.parent / "config.incoming").write_text(json.dumps(config))
        os.replace(repository.parent / "config.incoming", source / "config.json")
        wait_for_index(polling, lambda rows: {(MODEL, "1"), (MODEL, "2")} <= served(rows))
        assert client.get_model_metadata(MODEL)["versions"] == ["1", "2"]
        np.testing.assert_allclose(digits(client, MODEL, "2"), before, rtol=1e-5)
        assert client.get_model_config(MODEL)["version_policy"] == {"all": {}}

        shutil.rmtree(repository / "digits_b")  # a removed model
        wait_for_index(polling, lambda rows: "digits_b" not in {r["name"] for r in rows})
        assert not client.is_model_ready("digits_b")

        copy_model(source, repository, "digits_c", lambda c: c.update(instance_group={"count": 100}))  # broken
        failed = {"name": "digits_c", "state": "UNAVAILABLE"}  # and a reason other than "not loaded" (not polled yet)
        rows = wait_for_index(
            polling, lambda rows: any(failed.items() <= r.items() and r["reason"] != "not loaded" for r in rows)
        )
        broken = next(r for r in rows if r["name"] == "digits_c")
        assert broken["state"] == "UNAVAILABLE"
        assert "instance_group.count is 100 (integer), expected an integer from 1 to 16" in broken["reason"]
        np.testing.assert_allclose(digits(client, MODEL), before, rtol=1e-5)  # the others serve on
