"""``python -m export quantize``: the committed digits model as INT8, its report, the gate, bad inputs, and the
service serving the INT8 version over REST. Every run works on a copy of ``models/lenet5_digits``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from export import quantize as quantize_module
from export.__main__ import main
from export.errors import ExportError
from export.int8_check import SPEED_RUNS, Comparison, gate
from service.repository import file_sha256, load_model_config
from tests.app_client import serving

MODEL = "lenet5_digits"
SAMPLES = "300"  # calibration images: enough for the digits, and fast


def _copy(committed_models: Path, folder: Path) -> Path:
    """A repository holding a copy of the committed digits model (models/ itself is never written)."""
    folder.mkdir(parents=True)
    shutil.copytree(committed_models / MODEL, folder / MODEL)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes; folders as empty entries."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, committed_models: Path) -> Path:
    """A repository where the digits model has been quantized once, through the CLI, into version 2."""
    repo = _copy(committed_models, tmp_path_factory.mktemp("quantized") / "models")
    assert main(["quantize", MODEL, "--repository", str(repo), "--calibration", "digits", "--samples", SAMPLES]) == 0
    return repo


def test_the_int8_version_keeps_the_accuracy_and_reports_everything(quantized: Path, committed_models: Path) -> None:
    config = load_model_config(quantized / MODEL)
    assert list(config.versions) == ["1", "2"]
    assert config.input == load_model_config(committed_models / MODEL).input  # the same interface: FP32 in
    report = config.versions["2"].export_report
    assert report["precision"] == "int8"
    assert report["quantization"]["format"] == "QDQ"
    assert report["quantization"]["per_channel"] is True
    assert (report["quantization"]["activation_type"], report["quantization"]["weight_type"]) == ("QUInt8", "QInt8")
    assert report["source_version"] == "1"
    assert report["calibration"]["source"] == "digits"
    assert report["calibration"]["count"] == int(SAMPLES)
    held = report["holdout"]
    assert held["count"] == 360
    assert held["labelled"] is True
    assert held["fp32_accuracy"] == pytest.approx(0.9722, abs=1e-4)  # v1's own training report
    assert held["int8_accuracy"] >= 0.95
    assert held["fp32_accuracy"] - held["int8_accuracy"] <= 0.01
    assert 0.95 <= held["top1_agreement"] <= 1.0
    assert report["gate"]["measure"] == "accuracy drop"
    sizes = report["size_bytes"]
    assert sizes["fp32"] == (committed_models / MODEL / "1" / "model.onnx").stat().st_size
    assert sizes["int8"] == (quantized / MODEL / "2" / "model.onnx").stat().st_size
    assert sizes["int8"] < sizes["fp32"] / 2
    speed = report["speed"]
    assert (speed["batch"], speed["runs"]) == (8, SPEED_RUNS)
    assert speed["int8_speedup"] == pytest.approx(speed["fp32_median_ms"] / speed["int8_median_ms"])
    assert config.versions["2"].sha256 == file_sha256(quantized / MODEL / "2" / "model.onnx")
    committed = committed_models / MODEL / "1" / "model.onnx"
    assert (quantized / MODEL / "1" / "model.onnx").read_bytes() == committed.read_bytes()
    assert not [p for p in quantized.iterdir() if p.name.startswith(".")]  # no staging folder left behind


async def test_the_service_serves_the_int8_version(quantized: Path, digits_holdout: list[tuple[bytes, int]]) -> None:
    samples = digits_holdout[:40]
    labels = []
    async with serving(quantized) as client:
        for png, _ in samples:
            response = await client.post(
                f"/v1/models/{MODEL}/classify", content=png, headers={"Content-Type": "image/png"}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["version"] == "2"  # the latest version: the INT8 one
            labels.append(body["results"][0]["predictions"][0]["label"])
    right = sum(label == str(truth) for label, (_, truth) in zip(labels, samples, strict=True))
    assert right >= 38, labels  # the FP32 model gets 39 of these 40


def _accuracy_dropped(*_: object) -> Comparison:
    return Comparison(360, 350, 342, 349)


def _ort_fails(*_: object) -> None:
    raise ValueError("unsupported op")


@pytest.mark.parametrize(
    ("step", "fault", "refusal"),
    [
        (
            "compare",
            _accuracy_dropped,
            (
                "error: [accuracy] INT8 held-out accuracy 95.00% vs FP32 97.22%",
                "more than --max-accuracy-drop 0.01; nothing written",
            ),
        ),
        ("quantize_onnx", _ort_fails, ("error: [quantize] ONNX Runtime could not quantize ",)),
    ],
    ids=["the-gate-refuses-an-accuracy-drop", "a-graph-ort-cannot-quantize"],
)
def test_a_refusal_exits_2_and_writes_nothing(
    step: str,
    fault: Callable[..., object],
    refusal: tuple[str, ...],
    tmp_path: Path,
    committed_models: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _copy(committed_models, tmp_path / "models")
    before = _snapshot(repo)
    monkeypatch.setattr(quantize_module, step, fault)
    assert main(["quantize", MODEL, "--repository", str(repo), "--calibration", "digits", "--samples", "10"]) == 2
    err = capsys.readouterr().err
    for part in refusal:
        assert part in err
    assert _snapshot(repo) == before


def test_without_labels_the_gate_is_top1_agreement() -> None:
    assert gate(Comparison(100, None, None, 99), 0.01)["measure"] == "top-1 agreement (no labels)"
    with pytest.raises(ExportError, match=r"agrees with FP32's top-1 on 98\.00% of 100"):
        gate(Comparison(100, None, None, 98), 0.01)
    with pytest.raises(ExportError, match=r"drop of 0\.10%, more than --max-accuracy-drop 0;"):
        gate(Comparison(1000, 973, 972, 1000), 0.0)


def test_a_drop_of_exactly_the_bound_passes_the_gate() -> None:
    """1 image of 100 at --max-accuracy-drop 0.01: 0.97 - 0.96 is 0.010000000000000009 in floats, yet within it."""
    assert gate(Comparison(100, 97, 96, 99), 0.01)["value"] == pytest.approx(0.01)
    assert gate(Comparison(300, None, None, 297), 0.01)["measure"] == "top-1 agreement (no labels)"
    with pytest.raises(ExportError, match=r"a drop of 2\.00%"):
        gate(Comparison(100, 97, 95, 98), 0.01)


def test_a_folder_calibrates_without_labels(
    tmp_path: Path, committed_models: Path, digits_holdout: list[tuple[bytes, int]]
) -> None:
    repo = _copy(committed_models, tmp_path / "models")
    images = tmp_path / "images"
    (images / "more").mkdir(parents=True)
    for i, (png, _) in enumerate(digits_holdout[:24]):
        (images / ("more" if i % 2 else "") / f"digit-{i:02}.png").write_bytes(png)
    (images / "notes.txt").write_text("not an image, skipped")
    assert main(["quantize", MODEL, "--repository", str(repo), "--calibration", str(images), "--version", "7"]) == 0
    report = load_model_config(repo / MODEL).versions["7"].export_report
    assert report["calibration"] == {
        "source": str(images),
        "count": 19,  # 24 images, every 5th counting back from the last (5 of them) held out
        "split": "sorted by path, every 5th counting back from the last held out",
    }
    assert report["holdout"]["count"] == 5
    assert report["holdout"]["labelled"] is False
    assert report["holdout"]["fp32_accuracy"] is None
    assert report["gate"]["measure"] == "top-1 agreement (no labels)"
    assert report["gate"]["value"] >= 0.99


def _folder_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (None, "no such folder (give `digits` or a folder of images)"),
        ({}, "holds 0 image file(s)"),
        ({"a.txt": b"text", "b.csv": b"1,2"}, "holds 0 image file(s)"),
        ({"only.png": b""}, "holds 1 image file(s) (.png, .jpg"),
        ({"a.png": b"not a png", "b.png": b"nor this"}, "a.png: "),
    ],
)
def test_a_bad_folder_is_refused_with_nothing_written(
    tmp_path: Path,
    committed_models: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, bytes] | None,
    message: str,
) -> None:
    repo = _copy(committed_models, tmp_path / "models")
    before = _snapshot(repo)
    folder = tmp_path / "missing" if files is None else _folder_with(tmp_path, files)
    assert main(["quantize", MODEL, "--repository", str(repo), "--calibration", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # after the progress lines
    assert last.startswith("error: [calibration] ")
    assert message in last
    assert _snapshot(repo) == before


def test_an_unknown_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "nope", "--repository", str(tmp_path), "--calibration", "digits"]) == 2
    assert capsys.readouterr().err == f"error: [repository] no model 'nope' in {tmp_path}\n"


def test_an_int8_version_is_not_quantized_again(quantized: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = json.loads((quantized / MODEL / "config.json").read_text())
    assert main(["quantize", MODEL, "--repository", str(quantized), "--calibration", "digits"]) == 2
    assert "error: [precision] lenet5_digits version 2 is int8; quantize takes an fp32 graph" in capsys.readouterr().err
    assert json.loads((quantized / MODEL / "config.json").read_text()) == before
