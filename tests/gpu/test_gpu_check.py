"""The GPU check's CPU side: gpu_check.py without a GPU, the CUDA library finder, and the staged-parts check.

No GPU is needed or used: ``CUDA_VISIBLE_DEVICES`` is emptied, so gpu_check.py reports every GPU figure as
"unmeasured: no GPU" and names the provider that really runs each requested list. Run: pytest tests/gpu
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cuda_libs
import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
NO_GPU = "unmeasured: no GPU"


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu_report")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(HERE / "gpu_check.py"), "--out", str(out), "--work", str(out / "work")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mode cpu" in done.stdout
    assert NO_GPU in (out / "gpu_report.md").read_text()
    report: dict[str, Any] = json.loads((out / "gpu_report.json").read_text())
    return report


def test_without_a_gpu_every_gpu_figure_is_unmeasured(cpu_report: dict[str, Any]) -> None:
    assert cpu_report["mode"] == "cpu"
    assert cpu_report["gpu"]["present"] is False
    for load in cpu_report["loads"]:
        assert (load["runs"], load["load_s"], load["gpu_memory_mb"]) == (NO_GPU, NO_GPU, NO_GPU)
    for row in cpu_report["parity"]:
        assert row["max_abs_diff"] == row["relative_diff"] == NO_GPU
    assert {row["path"] for row in cpu_report["latency"]} == {"session.run", "bound runner", "cuda graphs"}
    assert all(row["p50_ms"] == row["p99_ms"] == NO_GPU for row in cpu_report["latency"])
    assert cpu_report["http"]["best_images_per_s"] == NO_GPU
    assert all(step["images_per_s"] == NO_GPU for step in cpu_report["http"]["steps"])


def test_names_the_provider_that_runs_each_requested_list(cpu_report: dict[str, Any]) -> None:
    probes = {probe["requested"]: probe for probe in cpu_report["providers"]}
    assert list(probes) == ["tensorrt", "tensorrt,cuda", "cuda", "cpu"]
    for requested, probe in probes.items():
        assert probe["runs"] == "CPUExecutionProvider", (requested, probe["error"], probe["logged"])
        assert probe["device"] == "cpu"
        assert probe["stdout"] == "", f"loading with {requested} printed on stdout: {probe['stdout']!r}"
    assert any("TensorrtExecutionProvider" in line for line in probes["tensorrt,cuda"]["logged"])


def test_cuda_libs_tells_cuda_12_from_the_cuda_13_onnxruntime_needs(tmp_path: Path) -> None:
    cu12 = tmp_path / "cu12" / "site-packages"
    for package, lib in [
        ("cublas", "libcublas.so.12"),
        ("cudnn", "libcudnn.so.9"),
        ("cuda_runtime", "libcudart.so.12"),
    ]:
        (cu12 / "nvidia" / package / "lib").mkdir(parents=True, exist_ok=True)
        (cu12 / "nvidia" / package / "lib" / lib).touch()
    found = cuda_libs.find([cu12], system=False)
    assert found.cublas_majors == [12]
    assert "libcublas.so.13" in found.cuda_missing
    assert "libcudnn.so.9" not in found.cuda_missing
    assert "--cuda13" in found.explain()

    cu13 = tmp_path / "cu13" / "site-packages"
    (cu13 / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    (cu13 / "nvidia" / "cudnn" / "lib").mkdir(parents=True)
    for lib in ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcufft.so.12", "libcurand.so.10"]:
        (cu13 / "nvidia" / "cu13" / "lib" / lib).touch()
    (cu13 / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9").touch()
    found = cuda_libs.find([cu13], system=False)
    assert found.cuda_missing == []
    assert found.lib_dirs == [str(cu13 / "nvidia" / "cu13" / "lib"), str(cu13 / "nvidia" / "cudnn" / "lib")]


def _stage(tmp_path: Path, parts: dict[str, bytes]) -> Path:
    stage = tmp_path / "stage"
    stage.mkdir()
    lines = ["python 3.11", f"parts {len(parts)}", "bundle 0 0 bundle.tar"]
    for name, data in parts.items():
        (stage / name).write_bytes(data)
        lines.append(f"part {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    (stage / "manifest.txt").write_text("\n".join(lines) + "\n")
    return stage


@pytest.mark.parametrize(
    ("damage", "status", "says"), [(None, 0, "2 of 2"), ("drop", 3, "MISSING"), ("flip", 4, "CHECKSUM")]
)
def test_run_on_gpu_names_missing_and_corrupt_parts(tmp_path: Path, damage: str | None, status: int, says: str) -> None:
    stage = _stage(tmp_path, {"part-00": b"a" * 1000, "part-01": b"b" * 10})
    if damage == "drop":
        (stage / "part-01").unlink()
    elif damage == "flip":
        (stage / "part-00").write_bytes(b"c" * 1000)
    env = {**os.environ, "GPU_STAGE": str(stage), "OUT": str(tmp_path / "out")}
    command = ["bash", str(HERE / "run_on_gpu.sh"), "--check-parts"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT, check=False)
    assert done.returncode == status, done.stdout + done.stderr
    assert says in done.stdout
