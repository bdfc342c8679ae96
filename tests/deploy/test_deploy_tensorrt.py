"""Offline checks that the CUDA image can run the TensorRT provider and keep its engines under a read-only root.

The cuda variant must install TensorRT 10's libraries (onnxruntime-gpu 1.31's provider links the .so.10 names),
register their folder with the dynamic loader and prove at build time that they load. The engine cache folder
(``CNNSERVE_TENSORRT_CACHE_PATH``) must be the same path in the image, compose and k8s, owned by the image's
runtime user, and mounted writable where the root filesystem is read-only (compose, the GPU overlay).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from deploy_helpers import REPO_ROOT, Stage, find_tool, one, render, run
from packaging.requirements import Requirement

SETTING = "CNNSERVE_TENSORRT_CACHE_PATH"
COMPOSE = REPO_ROOT / "docker-compose.yml"
#: The libraries the TensorRT provider of onnxruntime-gpu 1.31 links (``readelf -d``), checked again below.
PROVIDER_TENSORRT_LIBS = ("libnvinfer.so.10", "libnvonnxparser.so.10")


def _requirements(variant: str) -> list[Requirement]:
    done = run([sys.executable, "deploy/requirements.py", "--variant", variant])
    assert done.returncode == 0, done.stderr
    return [Requirement(line) for line in done.stdout.splitlines() if line.strip()]


def _tensorrt(requirements: list[Requirement]) -> list[Requirement]:
    return [r for r in requirements if r.name.lower().replace("_", "-").startswith("tensorrt")]


def _image_cache_path(runtime_stage: Stage) -> str:
    found = re.findall(rf"\b{SETTING}=(\S+)", " ".join(runtime_stage.all("ENV")))
    assert len(found) == 1, f"the runtime stage must set {SETTING} once, found {found}"
    return str(found[0])


def _compose_service() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return dict(compose["services"]["cnnserve"], _named_volumes=set(compose.get("volumes") or {}))


def test_cuda_variant_pins_tensorrt_libs_below_11() -> None:
    """One TensorRT libs wheel, for the CUDA major onnxruntime-gpu was built with, 10.x only."""
    found = _tensorrt(_requirements("cuda"))
    assert len(found) == 1, f"expected one TensorRT libs requirement in the cuda variant, got {found}"
    requirement = found[0]
    build_info = pytest.importorskip("onnxruntime.capi.build_and_package_info")
    cuda_major = str(getattr(build_info, "cuda_version", "13")).split(".")[0]
    assert requirement.name.lower().replace("_", "-") == f"tensorrt-cu{cuda_major}-libs", requirement
    spec = requirement.specifier
    assert spec.contains("10.16.1.11"), f"{requirement}: the current TensorRT 10 release must be allowed"
    for too_new in ("11.0.0.114", "11.4.0.106", "12.0"):
        assert not spec.contains(too_new), f"{requirement} allows TensorRT {too_new}; the provider needs .so.10"
    assert not spec.contains("9.9.9"), f"{requirement} allows TensorRT 9"


def test_cpu_variant_installs_no_tensorrt() -> None:
    assert not _tensorrt(_requirements("cpu")), "the cpu image must stay free of TensorRT"


def test_builder_installs_the_variant_requirements(stages: dict[str, Stage]) -> None:
    """The pin above reaches the image: the builder installs exactly what requirements.py prints for VARIANT."""
    runs = " ".join(stages["builder"].all("RUN"))
    assert 'deploy/requirements.py --variant "${VARIANT}" > requirements.txt' in runs, runs
    assert "pip install --no-cache-dir -r requirements.txt" in runs, runs


def test_provider_links_only_the_libraries_the_image_checks() -> None:
    """The list the build checks is the provider's real one: read the NEEDED entries of the installed provider."""
    spec = importlib.util.find_spec("onnxruntime")
    readelf = find_tool("readelf")
    if spec is None or spec.origin is None or readelf is None:
        pytest.skip("needs onnxruntime-gpu installed and readelf (binutils)")
    provider = Path(spec.origin).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    if not provider.is_file():
        pytest.skip(f"{provider} is absent: the CPU onnxruntime wheel is installed, not onnxruntime-gpu")
    done = run([readelf, "-d", str(provider)])
    assert done.returncode == 0, done.stderr
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", done.stdout))
    assert {n for n in needed if n.startswith("libnv")} == set(PROVIDER_TENSORRT_LIBS), sorted(needed)


def test_runtime_registers_and_loads_tensorrt_libs(runtime_stage: Stage) -> None:
    """The loader learns TensorRT's folder (not under nvidia/*/lib), and a cuda build loads each linked library."""
    step = next((r for r in runtime_stage.all("RUN") if "ldconfig" in r), None)
    assert step is not None, "the runtime stage runs no ldconfig"
    assert "-name 'libnvinfer.so.10'" in step, f"libnvinfer.so.10's folder is not given to the loader: {step}"
    assert "/etc/ld.so.conf.d/" in step, step
    assert step.index("libnvinfer.so.10") < step.index("ldconfig"), "register the folder before running ldconfig"
    check = step[step.index("ldconfig") :]
    assert '[ "${VARIANT}" = cuda ]' in check, f"the load check must run for the cuda variant only: {check}"
    for library in PROVIDER_TENSORRT_LIBS:
        assert "ctypes.CDLL" in check, check
        assert re.search(rf"\s{re.escape(library)}\b", check), f"the cuda build never loads {library}: {check}"


def test_cache_folder_belongs_to_the_runtime_user(runtime_stage: Stage) -> None:
    """mkdir -p the cache path, then chown -R it (or a folder above it) to the USER the image runs as."""
    path = PurePosixPath(_image_cache_path(runtime_stage))
    assert path.is_absolute(), path
    assert not path.is_relative_to("/models"), "the repository is read-only to the service"
    assert not path.is_relative_to("/tmp"), "/tmp is a small tmpfs under k8s and compose"
    user = runtime_stage.last("USER")
    commands = [shlex.split(c) for r in runtime_stage.all("RUN") for c in r.split("&&")]
    assert any(c[:2] == ["mkdir", "-p"] and str(path) in c[2:] for c in commands), f"no `mkdir -p {path}`"
    owners = [c for c in commands if c[:1] == ["chown"] and user in c]
    covered = [
        c for c in owners if any(path == PurePosixPath(a) or ("-R" in c and path.is_relative_to(a)) for a in c[1:])
    ]
    assert covered, f"nothing chowns {path} to {user}: {owners}"


def test_image_compose_and_k8s_agree_on_the_cache_path(runtime_stage: Stage) -> None:
    image = _image_cache_path(runtime_stage)
    service = _compose_service()
    assert service["environment"].get(SETTING) == image, f"compose sets {service['environment'].get(SETTING)}"
    for overlay in ("base", "overlays/cpu", "overlays/gpu"):
        data = one(render(overlay), "ConfigMap")["data"]
        if overlay == "overlays/gpu":
            assert SETTING in data, "the GPU overlay must say where its cache volume is"
        assert data.get(SETTING, image) == image, f"k8s/{overlay} sets {SETTING}={data.get(SETTING)}"


def test_compose_mounts_a_named_volume_on_the_cache(runtime_stage: Stage) -> None:
    """read_only: true leaves no writable folder but volumes and /tmp: the cache needs its own, kept across runs."""
    image = _image_cache_path(runtime_stage)
    service = _compose_service()
    assert service["read_only"] is True
    mounts = [v.split(":") for v in service["volumes"] if v.split(":")[1] == image]
    assert len(mounts) == 1, f"compose mounts nothing (or more than one thing) on {image}: {service['volumes']}"
    source, _, *mode = mounts[0]
    assert source in service["_named_volumes"], f"{source} is not a named volume declared at the top level"
    assert mode in ([], ["rw"]), f"the cache mount must be writable: {':'.join(mounts[0])}"


def test_gpu_overlay_mounts_a_writable_volume_on_the_cache(runtime_stage: Stage) -> None:
    image = _image_cache_path(runtime_stage)
    docs = render("overlays/gpu")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == image]
    assert len(mounts) == 1, f"the GPU overlay mounts nothing on {image}: {container.get('volumeMounts')}"
    assert not mounts[0].get("readOnly", False), mounts[0]
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume, f"not a writable volume kind: {volume}"
    gid = runtime_stage.last("USER").split(":")[1]
    assert str(pod["securityContext"]["fsGroup"]) == gid, "the volume's group must be the image user's group"
