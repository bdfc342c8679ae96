"""Offline checks of the Dockerfile: hadolint, classic syntax, and the promises a linter cannot see.

The runtime stage must carry no torch, run as a numeric non-root user, expose the port its CMD binds and probe
readiness on it; the variant requirements must come from pyproject.toml's pins. The real build is
``.ci/container-smoke``.
"""

from __future__ import annotations

import re
import sys
import tomllib

import pytest
from deploy_helpers import REPO_ROOT, Stage, exec_form, require_tool, run

TORCH_PACKAGES = ("torch", "torchvision", "onnx", "onnxscript", "scikit-learn")


def _requirements(*args: str) -> list[str]:
    done = run([sys.executable, "deploy/requirements.py", *args])
    assert done.returncode == 0, f"deploy/requirements.py {' '.join(args)} failed: {done.stderr}"
    return done.stdout.split()


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[=<>~!; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _cmd_port(args: list[str]) -> int:
    assert "--port" in args, f"CMD {args} passes no --port"
    return int(args[args.index("--port") + 1])


def test_hadolint_passes() -> None:
    done = run([require_tool("hadolint"), "--config", ".hadolint.yaml", "Dockerfile"])
    assert done.returncode == 0, f"hadolint found problems:\n{done.stdout}{done.stderr}"


def test_hadolint_fails_on_a_bad_line(dockerfile_text: str) -> None:
    """The check above can fail: an unpinned apt-get install is reported and hadolint exits non-zero."""
    bad = dockerfile_text.replace("WORKDIR /src\n", "WORKDIR /src\nRUN apt-get install curl\n", 1)
    assert bad != dockerfile_text
    done = run([require_tool("hadolint"), "--config", ".hadolint.yaml", "-"], stdin=bad)
    assert done.returncode != 0, done.stdout
    assert "DL3008" in done.stdout, done.stdout


def test_classic_syntax_only(dockerfile_text: str) -> None:
    """podman/buildah here has no BuildKit: no syntax directive, no RUN --mount, no heredocs."""
    assert not re.search(r"^#\s*syntax=", dockerfile_text, re.M | re.I)
    assert "--mount" not in dockerfile_text
    assert "<<" not in dockerfile_text


def test_stages_and_targets(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["builder", "loadtest", "venv", "runtime"], f"stages: {list(stages)}"
    assert stages["builder"].base == stages["runtime"].base == "${BASE_IMAGE}", (
        "builder and runtime must share BASE_IMAGE: the venv is copied from one to the other"
    )


def test_runtime_stage_installs_no_torch(runtime_stage: Stage) -> None:
    for keyword, args in runtime_stage.instructions:
        assert "pip install" not in args, f"runtime stage installs packages itself ({keyword} {args}); build them"
        assert "torch" not in args.lower(), f"runtime stage mentions torch: {keyword} {args}"
    copies = runtime_stage.all("COPY")
    from_builder = [c for c in copies if c.startswith("--from=")]
    assert from_builder == ["--from=venv /opt/cnnserve /opt/cnnserve"], f"runtime copies {from_builder}"


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_variant_requirements_pin_pyproject_versions(variant: str) -> None:
    pinned = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    got = _requirements("--variant", variant)
    assert not _names(got) & set(TORCH_PACKAGES), f"{variant} image would install {_names(got) & set(TORCH_PACKAGES)}"
    gpu_pin = next(r for r in pinned if r.startswith("onnxruntime-gpu"))
    version = gpu_pin.split("==")[1]
    expected_runtime = f"onnxruntime=={version}" if variant == "cpu" else f"onnxruntime-gpu[cuda,cudnn]=={version}"
    assert expected_runtime in got, f"{variant}: expected {expected_runtime} in {got}"
    # The cuda variant adds TensorRT's libraries, which pyproject does not list (test_deploy_tensorrt.py checks them).
    tensorrt = {r for r in got if r.lower().startswith("tensorrt")} if variant == "cuda" else set()
    assert sorted(set(got) - {expected_runtime} - tensorrt) == sorted(set(pinned) - {gpu_pin})


def test_requirements_refuses_unknown_extra() -> None:
    done = run([sys.executable, "deploy/requirements.py", "--variant", "cpu", "--extra", "nonexistent"])
    assert done.returncode == 2, done.stderr
    assert "nonexistent" in done.stderr, done.stderr


def test_dockerignore_keeps_torch_side_out() -> None:
    """The build context is an allow-list that never re-admits export/ or the .venv (where torch lives)."""
    lines = [ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", f".dockerignore must start by excluding everything, starts with {rules[0]!r}"
    readmitted = [r[1:] for r in rules if r.startswith("!")]
    assert not [r for r in readmitted if r.startswith(("export", ".venv", ".git"))], readmitted


def test_runtime_runs_as_numeric_non_root_user(runtime_stage: Stage) -> None:
    user = runtime_stage.last("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user!r}: Kubernetes' runAsNonRoot can only verify a numeric UID"
    assert int(uid) != 0, f"USER {user!r} is root"


def test_expose_matches_cmd_port(runtime_stage: Stage) -> None:
    exposed = {int(p.split("/")[0]) for p in " ".join(runtime_stage.all("EXPOSE")).split()}
    cmd = exec_form(runtime_stage.last("CMD"))
    assert cmd[:3] == ["python", "-m", "service"], f"CMD {cmd} does not start the service"
    bound = {_cmd_port(cmd), int(cmd[cmd.index("--grpc-port") + 1])}
    assert exposed == bound, f"EXPOSE {exposed} but CMD binds {bound} (HTTP and gRPC)"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", "the server must listen on every interface in a container"


def test_healthcheck_probes_readiness_on_cmd_port(runtime_stage: Stage) -> None:
    check = runtime_stage.last("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert command, f"HEALTHCHECK without CMD: {check!r}"
    probe = " ".join(exec_form(command))
    port = _cmd_port(exec_form(runtime_stage.last("CMD")))
    assert f"http://127.0.0.1:{port}/v2/health/ready" in probe, probe
    assert "curl" not in probe, "the slim image carries no curl"
    assert "wget" not in probe, "the slim image carries no wget"
    assert "--timeout=" in options, options
    assert "--start-period=" in options, options


def test_stop_signal_is_sigterm(runtime_stage: Stage) -> None:
    assert runtime_stage.last("STOPSIGNAL") == "SIGTERM"


def test_label_version_matches_pyproject(stages: dict[str, Stage]) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    for stage in (stages["loadtest"], stages["runtime"]):
        labels = " ".join(stage.all("LABEL"))
        assert f'org.opencontainers.image.version="{version}"' in labels, f"{stage.name}: {labels}"


def test_env_names_are_settings_fields(runtime_stage: Stage, settings_env_names: frozenset[str]) -> None:
    used = set(re.findall(r"\b(CNNSERVE_[A-Z0-9_]+)=", " ".join(runtime_stage.all("ENV"))))
    assert used, "the runtime stage sets no CNNSERVE_* variable (the repository path at least)"
    assert used <= settings_env_names, f"not fields of Settings: {sorted(used - settings_env_names)}"
