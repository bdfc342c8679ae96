"""Offline checks of k8s/: kustomize renders, strict schemas, and the wiring no schema sees.

Schemas come from ``kubernetes-validate --strict`` (a WARN line, printed for a kind it has no schema for, counts
as a failure). The wiring: probes hit routes the app serves on the port it binds, the HPA scales the Deployment,
selectors match the pod labels, settings are real Settings fields, the GPU overlay asks for a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    METRIC_RE,
    REPO_ROOT,
    exec_form,
    exported_metric_names,
    one,
    parse_dockerfile,
    render,
    require_tool,
    run,
    smoke_dashboard,
)

OVERLAYS = ("base", "overlays/cpu", "overlays/gpu")
#: The oldest Kubernetes the manifests promise to fit, and the newest the validator knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
#: Kinds defined by CRDs, which the validator has no schema for; skipped there on purpose and checked below.
CRD_KINDS = frozenset({"ServiceMonitor", "ScaledObject"})


def _validate(docs: list[dict[str, Any]], version: str) -> tuple[int, str]:
    done = run(
        [require_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, "-"],
        stdin=yaml.safe_dump_all(docs),
    )
    return done.returncode, done.stdout + done.stderr


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"expected one container, got {[c['name'] for c in containers]}"
    return dict(containers[0])


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"])


def _with_component(tmp_path: Path, component: str) -> list[dict[str, Any]]:
    """Render the cpu overlay plus an optional component of k8s/components, the way a user would enable it."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO_ROOT / "k8s/overlays/cpu", tmp_path)],
        "components": [os.path.relpath(REPO_ROOT / "k8s/components" / component, tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    done = run([require_tool("kubectl"), "kustomize", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders_every_kind(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in render(overlay))
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    assert kinds == expected


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strict_schema(overlay: str, version: str) -> None:
    code, output = _validate(render(overlay), version)
    problems = [ln for ln in output.splitlines() if ln.startswith(("WARN", "ERROR"))]
    assert code == 0, f"k8s/{overlay} against {version} (exit {code}):\n{output}"
    assert not problems, f"k8s/{overlay} against {version}:\n{output}"


def test_strict_schema_rejects_an_unknown_field() -> None:
    """The check above can fail: a misspelt field is an error under --strict."""
    docs = render("overlays/cpu")
    bad = [dict(d, spec={**d["spec"], "maxReplica": 3}) if d["kind"] == "HorizontalPodAutoscaler" else d for d in docs]
    code, output = _validate(bad, K8S_VERSIONS[0])
    assert code != 0, output
    assert "maxReplica" in output, output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_port_is_the_port_the_server_binds(overlay: str) -> None:
    container = _container(render(overlay))
    args = [*container.get("command", []), *container.get("args", [])]
    assert args[:3] == ["python", "-m", "service"], f"container runs {args}, not the service"
    bound = {"http": int(args[args.index("--port") + 1]), "grpc": int(args[args.index("--grpc-port") + 1])}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == bound, f"container ports {ports}, server binds {bound}"
    runtime = parse_dockerfile((REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"))[-1]
    image_cmd = exec_form(runtime.last("CMD"))
    assert image_cmd == args, f"manifest runs {args}, the image's CMD is {image_cmd}; keep them identical"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_routes_that_answer_200_without_a_token(overlay: str, served_status: Callable[[str], int]) -> None:
    """Each probe's path, asked of the real app once it is ready (auth on), answers 200 on the port named http."""
    container = _container(render(overlay))
    expected = {"startupProbe": "/v2/health/ready", "readinessProbe": "/v2/health/ready"}
    expected["livenessProbe"] = "/v2/health/live"
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get == {"path": path, "port": "http"}, f"{probe}: {get}"
        assert served_status(path) == 200, f"{probe}: GET {path} on the ready app gave {served_status(path)}"


def test_auth_is_on_in_the_probe_check(served_status: Callable[[str], int]) -> None:
    """The 200s above mean something: with the same app, a guarded route refuses a request without the token."""
    assert served_status("/v2/models/lenet5_digits") == 401
    assert served_status("/metrics") == 200, "Prometheus scrapes /metrics without a token"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_the_deployment(overlay: str) -> None:
    docs = render(overlay)
    hpa, deployment = one(docs, "HorizontalPodAutoscaler"), one(docs, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert target == ref
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count; re-applying would reset it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_pod_labels(overlay: str) -> None:
    docs = render(overlay)
    labels = _pod_labels(docs)
    deployment_selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    service = one(docs, "Service")["spec"]
    pdb_selector = one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    for what, selector in (("Deployment", deployment_selector), ("Service", service["selector"])):
        assert selector.items() <= labels.items(), f"{what} selector {selector} misses pod labels {labels}"
    assert pdb_selector.items() <= labels.items(), f"PDB selector {pdb_selector} misses pod labels {labels}"
    port_names = {p["name"] for p in _container(docs)["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= port_names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_as_the_image_user_without_privileges(overlay: str) -> None:
    docs = render(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    runtime = parse_dockerfile((REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"))[-1]
    image_uid = int(runtime.last("USER").split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid, f"pod uid vs image USER {image_uid}"
    container = _container(docs)["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in _container(docs)["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_real_and_valid(
    overlay: str, settings_env_names: frozenset[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ConfigMap key is a Settings field, and the Settings class accepts every value."""
    docs = render(overlay)
    data: dict[str, str] = one(docs, "ConfigMap")["data"]
    env_names = {e["name"] for e in _container(docs).get("env", [])}
    unknown = (set(data) | env_names) - settings_env_names
    assert not unknown, f"not fields of service.settings.Settings: {sorted(unknown)}"
    refs = [s["configMapRef"]["name"] for s in _container(docs)["envFrom"]]
    assert refs == [one(docs, "ConfigMap")["metadata"]["name"]], f"envFrom {refs} names no rendered ConfigMap"
    settings = pytest.importorskip("service.settings")
    for name in settings_env_names:
        monkeypatch.delenv(name, raising=False)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    parsed = settings.Settings()
    assert str(parsed.repository_path) == data["CNNSERVE_REPOSITORY_PATH"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_drain_fits_the_grace_period(overlay: str) -> None:
    """preStop pause + the service's graceful shutdown must end before the kubelet's SIGKILL."""
    docs = render(overlay)
    grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = " ".join(_container(docs)["lifecycle"]["preStop"]["exec"]["command"])
    pause = float(pre_stop.split("time.sleep(")[1].split(")")[0])
    drain = float(one(docs, "ConfigMap")["data"]["CNNSERVE_GRACEFUL_SHUTDOWN_S"])
    assert pause + drain < grace, f"preStop {pause} s + drain {drain} s >= terminationGracePeriodSeconds {grace}"


def test_gpu_overlay_asks_for_one_gpu_and_the_cuda_image() -> None:
    gpu = _container(render("overlays/gpu"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"].endswith("-cuda"), gpu["image"]
    data = one(render("overlays/gpu"), "ConfigMap")["data"]
    assert data["CNNSERVE_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    assert data["CNNSERVE_REQUIRE_GPU"] == "true"


def test_cpu_overlay_asks_for_no_gpu() -> None:
    cpu = _container(render("overlays/cpu"))
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert not cpu["image"].endswith("-cuda"), cpu["image"]


def test_servicemonitor_component_selects_the_service(tmp_path: Path) -> None:
    """The optional ServiceMonitor (a CRD kind: schema-validated nowhere, so checked here) finds the Service."""
    docs = _with_component(tmp_path, "servicemonitor")
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack", "the label the default stack selects"
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    code, output = _validate(core, K8S_VERSIONS[0])
    assert code == 0, output
    assert "WARN" not in output, output
    assert "ERROR" not in output, output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_over_nodes_and_zones_without_blocking_scheduling(overlay: str) -> None:
    docs = render(overlay)
    constraints = one(docs, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    labels = _pod_labels(docs)
    assert {c["topologyKey"] for c in constraints} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items(), constraint
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", "a one-node cluster must still schedule"
        assert constraint["matchLabelKeys"] == ["pod-template-hash"], "a rollout's pods spread among themselves"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_disruption_budget_lets_a_node_drain_at_the_fewest_replicas(overlay: str) -> None:
    """At the HPA's minimum, the PDB still allows an eviction (minAvailable: 1 with one replica never would)."""
    docs = render(overlay)
    budget = one(docs, "PodDisruptionBudget")["spec"]
    fewest = one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    assert "minAvailable" not in budget, budget
    assert 1 <= budget["maxUnavailable"] <= fewest


def test_networkpolicy_component_admits_only_the_ingress_and_prometheus(tmp_path: Path) -> None:
    docs = _with_component(tmp_path, "networkpolicy")
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= _pod_labels(docs).items()
    assert policy["policyTypes"] == ["Ingress"]
    admitted = {
        next(iter(rule["from"][0]["namespaceSelector"]["matchLabels"])): {p["port"] for p in rule["ports"]}
        for rule in policy["ingress"]
    }
    assert admitted == {"cnnserve.io/ingress": {"http", "grpc"}, "cnnserve.io/monitoring": {"http"}}
    assert all(len(rule["from"]) == 1 for rule in policy["ingress"]), "each rule admits one namespace label"
    assert {"http", "grpc"} <= {p["name"] for p in _container(docs)["ports"]}, "named ports must exist"
    for version in K8S_VERSIONS:
        code, output = _validate(docs, version)
        assert code == 0, output
        assert "WARN" not in output, output
        assert "ERROR" not in output, output


def _validate_core(docs: list[dict[str, Any]]) -> None:
    """Strict schema validation of every kind Kubernetes itself defines, at both ends of the supported range."""
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    for version in K8S_VERSIONS:
        code, output = _validate(core, version)
        assert code == 0, output
        assert "WARN" not in output, output
        assert "ERROR" not in output, output


def test_keda_component_scales_the_deployment_on_its_own_signals(tmp_path: Path) -> None:
    """KEDA's ScaledObject is a CRD kind: its published schema comes with KEDA's Helm chart and release files, which
    no package registry this project installs from serves, so it is checked structurally here; the rest strictly."""
    docs = _with_component(tmp_path, "autoscale-keda")
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"], "KEDA owns the HPA: the base's must go"
    scaled = one(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                         "triggers"}, sorted(spec)  # fmt: skip
    assert spec["scaleTargetRef"] == {"name": one(docs, "Deployment")["metadata"]["name"]}
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    budget = one(docs, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] <= spec["minReplicaCount"]
    triggers = {t["name"] if "name" in t else t["type"]: t for t in spec["triggers"]}
    assert set(triggers) == {"queue-depth", "p99-latency", "cpu"}
    for trigger in triggers.values():
        assert set(trigger) <= {"type", "name", "metricType", "metadata"}, trigger
        assert all(isinstance(value, str) for value in trigger["metadata"].values()), "KEDA metadata are strings"
    for name in ("queue-depth", "p99-latency"):
        metadata = triggers[name]["metadata"]
        assert float(metadata["threshold"]) > 0
        assert metadata["serverAddress"].startswith("http")
    assert triggers["p99-latency"]["metricType"] == "Value", "a latency is not divided among replicas"
    assert triggers["cpu"]["metricType"] == "Utilization"
    queries = [expr for _, expr in smoke_dashboard().scaling_queries()]
    assert queries == [triggers[name]["metadata"]["query"] for name in ("queue-depth", "p99-latency")]
    named = {name for query in queries for name in METRIC_RE.findall(query)}
    exported = exported_metric_names()
    assert named == {"cnnserve_queue_depth", "cnnserve_request_duration_seconds_bucket"}
    assert named <= exported, f"autoscaling queries name unknown metrics: {sorted(named - exported)}"
    _validate_core(docs)


def test_adapter_component_adds_the_pods_metrics_its_rules_serve(tmp_path: Path) -> None:
    docs = _with_component(tmp_path, "autoscale-adapter")
    metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods", "Pods"], "CPU stays beside the Pods metrics"
    wanted = {m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"}
    rules = yaml.safe_load((REPO_ROOT / "deploy/prometheus-adapter/rules.yaml").read_text(encoding="utf-8"))
    custom = rules["rules"]["custom"]
    assert wanted == {rule["name"]["as"] for rule in custom}, "every Pods metric must be one the adapter serves"
    series = {name for rule in custom for name in METRIC_RE.findall(rule["seriesQuery"])}
    exported = exported_metric_names()
    assert series == {"cnnserve_queue_depth", "cnnserve_request_duration_seconds_bucket"}
    assert series <= exported, f"adapter rules read unknown metrics: {sorted(series - exported)}"
    for rule in custom:
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}, "per-pod metrics need both"
    _validate_core(docs)


KSERVE = {"cpu": "cnnserve:0.1.0", "gpu": "cnnserve:0.1.0-cuda", "grpc": "cnnserve:0.1.0"}


def _inference_service(variant: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "k8s/kserve" / f"{variant}.yaml").read_text(encoding="utf-8"))
    return loaded


@pytest.mark.parametrize("variant", sorted(KSERVE))
def test_kserve_inference_service_runs_the_service_as_a_custom_predictor(
    variant: str, settings_env_names: frozenset[str], served_status: Callable[[str], int]
) -> None:
    """KServe's InferenceService is a CRD kind, whose published schema ships with KServe's release manifests and Helm
    chart, which no package registry this project installs from serves: checked structurally, and its container (a
    core Container) strictly, as a Pod's."""
    service = _inference_service(variant)
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = service["spec"]["predictor"]
    assert set(predictor) <= {"minReplicas", "maxReplicas", "containers"}, sorted(predictor)
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container", "KServe finds the serving container by this name"
    assert container["image"] == KSERVE[variant], "the tag the overlays use"
    args = [*container["command"], *container["args"]]
    assert args[:3] == ["python", "-m", "service"]
    http, grpc_port = int(args[args.index("--port") + 1]), int(args[args.index("--grpc-port") + 1])
    (port,) = container["ports"]  # Knative serves one port per container
    expected_port = {"h2c": grpc_port, "http1": http}
    assert expected_port[port["name"]] == port["containerPort"], (port, args)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CNNSERVE_REPOSITORY_PATH"] == "/mnt/models", "where KServe's storage initializer puts STORAGE_URI"
    assert "STORAGE_URI" in env
    assert set(env) - {"STORAGE_URI"} <= settings_env_names
    probe = container["readinessProbe"]
    if "httpGet" in probe:
        assert probe["httpGet"]["port"] == http
        assert served_status(probe["httpGet"]["path"]) == 200
    else:
        assert probe["grpc"]["port"] == grpc_port == port["containerPort"], "the gRPC health service answers there"
    if variant == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert env["CNNSERVE_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
        assert env["CNNSERVE_REQUIRE_GPU"] == "true"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": {"containers": [container]}}
    for version in K8S_VERSIONS:
        code, output = _validate([pod], version)
        assert code == 0, output
        assert "WARN" not in output, output
        assert "ERROR" not in output, output
