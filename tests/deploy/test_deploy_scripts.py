"""Offline checks of the deployment shell scripts (.ci/container-smoke, deploy/podman/*.sh) with shellcheck.

The scripts themselves run real builds; this only keeps them free of the quoting and error-handling traps
shellcheck knows, and makes sure they are executable and fail fast (``set -euo pipefail``).
"""

from __future__ import annotations

import os

import pytest
from deploy_helpers import REPO_ROOT, require_tool, run

SCRIPTS = (".ci/container-smoke", "deploy/podman/bootstrap-base-image.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_strict_and_executable(script: str) -> None:
    path = REPO_ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable (chmod +x {script})"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n"), f"{script}: first line {text.splitlines()[0]!r}"
    assert "\nset -euo pipefail\n" in text, f"{script} must stop on the first failure (set -euo pipefail)"


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script: str) -> None:
    done = run([require_tool("shellcheck"), "--severity=style", script])
    assert done.returncode == 0, f"shellcheck {script}:\n{done.stdout}{done.stderr}"
