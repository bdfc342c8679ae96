"""``export build --precision fp16``: the graph stored in fp16, marked in config.json, checked at the fp16 tolerance."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from export.__main__ import main
from export.errors import ExportError
from export.fp16 import FP16_TOLERANCE, check_fp16_arithmetic, convert_to_fp16


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """LeNet-5 (untrained) as model ``net32`` in fp32 and ``net16`` in fp16; and what the fp16 build printed."""
    out = tmp_path_factory.mktemp("fp16_export")
    assert main(["build", "lenet5", "--out", str(out), "--name", "net32"]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["build", "lenet5", "--out", str(out), "--name", "net16", "--precision", "fp16"]) == 0
    return out, printed.getvalue().strip()


def test_fp16_version_is_half_the_size_and_marked_for_gpus(repository: tuple[Path, str]) -> None:
    out, printed = repository
    config = json.loads((out / "net16" / "config.json").read_text())
    v1 = json.loads((out / "net32" / "config.json").read_text())["versions"]["1"]
    v2 = config["versions"]["1"]
    assert (v1["graph_precision"], v2["graph_precision"], config["precision"]) == ("fp32", "fp16", "fp16")
    assert config["input"][0]["data_type"] == config["output"][0]["data_type"] == "TYPE_FP32"

    fp32_bytes, fp16_bytes = ((out / name / "1" / "model.onnx").stat().st_size for name in ("net32", "net16"))
    assert fp16_bytes < 0.55 * fp32_bytes
    report = v2["export_report"]
    assert report["precision"] == "fp16"
    assert report["fp16"]["size_bytes"] == {"fp32": fp32_bytes, "fp16": fp16_bytes}  # same architecture, same size
    ratio = fp16_bytes / fp32_bytes
    assert printed.endswith(f"; fp16 graph {fp16_bytes:,} bytes, {ratio:.0%} of fp32's {fp32_bytes:,}")
    assert report["parity"]["tolerance"] == FP16_TOLERANCE == 5e-2
    assert "not fp16 arithmetic" in report["fp16"]["parity_method"]
    arithmetic = report["fp16"]["arithmetic"]
    assert 0 < arithmetic["max_abs_error"] / arithmetic["max_output_magnitude"] <= arithmetic["tolerance"] == 5e-2
    assert v1["export_report"]["parity"]["tolerance"] == 1e-4

    graph = onnx.load(str(out / "net16" / "1" / "model.onnx"))
    stored = {t.data_type for t in graph.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in stored
    assert onnx.TensorProto.FLOAT not in stored
    session = ort.InferenceSession(str(out / "net16" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == [o.type for o in session.get_outputs()] == ["tensor(float)"]


def test_an_explicit_tolerance_is_honoured_and_a_failure_writes_nothing(
    repository: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    shutil.copytree(repository[0], out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    argv = ["build", "lenet5", "--out", str(out), "--name", "net16", "--precision", "fp16", "--tolerance", "1e-9"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: [parity] at batch 1 ONNX Runtime and PyTorch differ" in err
    assert err.rstrip().endswith("tolerance 1e-09")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.parametrize(("model", "precision"), [("net32", "fp16"), ("net16", "fp32")])
def test_versions_of_one_model_share_one_graph_precision(
    model: str, precision: str, repository: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An fp16 version would turn the model's fp32 versions into fp16 TensorRT engines and the model GPU-only."""
    out = tmp_path / "models"
    shutil.copytree(repository[0], out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["build", "lenet5", "--out", str(out), "--name", model, "--precision", precision]) == 2
    assert f"error: [repository] {model} versions ['1'] are not {precision} graphs" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_fp16_arithmetic_that_overflows_is_refused_and_a_missing_kernel_is_reported() -> None:
    overflow = nn.Linear(4, 2)
    with torch.no_grad():
        overflow.weight.fill_(4e4)  # outputs beyond fp16's 65504: inf in fp16
    with pytest.raises(ExportError, match=r"\[fp16-arithmetic\] PyTorch's fp16 forward differs .* export it in fp32"):
        check_fp16_arithmetic(overflow, (4,), FP16_TOLERANCE)
    lrn = nn.Sequential(nn.LocalResponseNorm(2), nn.Flatten())
    figures = check_fp16_arithmetic(lrn, (3, 4, 4), FP16_TOLERANCE)
    assert figures["skipped"].startswith("PyTorch has no CPU fp16 kernel for a layer:")
    assert "max_abs_error" not in figures


def test_a_graph_the_checker_rejects_after_conversion_is_an_export_error(
    repository: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(repository[0] / "net32" / "1" / "model.onnx", path)

    def reject(*args: Any, **kwargs: Any) -> None:
        raise onnx.checker.ValidationError("injected")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(ExportError, match=r"\[fp16-convert\] onnx.checker rejected the fp16 graph: injected"):
        convert_to_fp16(path)
    assert path.read_bytes() == (repository[0] / "net32" / "1" / "model.onnx").read_bytes()
