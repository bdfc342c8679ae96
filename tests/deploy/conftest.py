"""Fixtures of the deployment checks: the parsed Dockerfile, the service's settings, the real app's answers.

Every test in this folder gets the ``deploy`` marker. Nothing here needs a container engine or a cluster; a check
whose tool is missing skips and says which package brings it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from deploy_helpers import REPO_ROOT, Stage, parse_dockerfile

PROBE_TOKEN = "deploy-tests-token"


@pytest.fixture(scope="session")
def dockerfile_text() -> str:
    """The repository's Dockerfile."""
    return (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def stages(dockerfile_text: str) -> dict[str, Stage]:
    """The Dockerfile's stages by name, in order."""
    return {stage.name: stage for stage in parse_dockerfile(dockerfile_text)}


@pytest.fixture(scope="session")
def runtime_stage(stages: dict[str, Stage]) -> Stage:
    """The stage a plain ``docker build`` produces: the last one."""
    return list(stages.values())[-1]


@pytest.fixture(scope="session")
def settings_env_names() -> frozenset[str]:
    """Every environment variable the service's Settings class reads (``CNNSERVE_<FIELD>``)."""
    settings = pytest.importorskip("service.settings", reason="service/settings.py is not importable yet")
    cls = settings.Settings
    prefix = str(cls.model_config.get("env_prefix", ""))
    return frozenset(f"{prefix}{name}".upper() for name in cls.model_fields)


@pytest.fixture(scope="session")
def served_status() -> Iterator[Callable[[str], int]]:
    """``served_status(path)`` -> HTTP status of a GET on the real app, started on the committed models.

    The app runs its lifespan (load, warm up, ready) in-process with a bearer token set, as a cluster with the
    ``cnnserve-auth`` Secret would: probes must answer without the token, guarded routes must not.
    """
    main = pytest.importorskip("service.main", reason="service/main.py (create_app) is not importable yet")
    settings = pytest.importorskip("service.settings", reason="service/settings.py is not importable yet")
    testclient = pytest.importorskip("fastapi.testclient", reason="httpx (dev extra) is needed by TestClient")
    app = main.create_app(settings.Settings(repository_path=REPO_ROOT / "models", auth_token=PROBE_TOKEN))
    with testclient.TestClient(app) as client:
        yield lambda path: int(client.get(path).status_code)
