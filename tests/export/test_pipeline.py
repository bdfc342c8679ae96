"""The export pipeline end to end on real modules: parity, repository layout, versions, and atomic failure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from export.errors import ExportError
from export.pipeline import ExportSpec, build
from export.zoo import get
from service.repository import load_model_config, version_dirs

LABELS = tuple(str(i) for i in range(10))


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return get("lenet5").factory(num_classes=10)


def _spec(**overrides: object) -> ExportSpec:
    fields: dict[str, object] = {"name": "lenet", "input_size": (1, 32, 32), "labels": LABELS}
    fields.update(overrides)
    return ExportSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    out = tmp_path_factory.mktemp("repo")
    model = _lenet()
    build(model, _spec(), out, architecture="lenet5")
    return out, model


def test_round_trip_matches_pytorch_at_several_batch_sizes(exported: tuple[Path, nn.Module]) -> None:
    out, model = exported
    session = ort.InferenceSession(str(out / "lenet/1/model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"
    assert session.get_outputs()[0].name == "logits"
    assert session.get_inputs()[0].shape[0] not in (1, 2)  # the batch axis is symbolic, not the trace batch
    for batch in (1, 3, 17, 64):
        x = torch.randn(batch, 1, 32, 32)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = session.run(None, {"input": x.numpy()})
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


def test_config_satisfies_the_service_contract(exported: tuple[Path, nn.Module]) -> None:
    out, _ = exported
    config = load_model_config(out / "lenet")
    assert config.max_batch_size == 32
    assert config.input[0].dims == (1, 32, 32)
    assert config.output[0].dims == (10,)
    assert config.labels == LABELS
    info = config.versions["1"]
    assert info.sha256 == hashlib.sha256((out / "lenet/1/model.onnx").read_bytes()).hexdigest()
    report = info.export_report
    assert report["parity"]["max_abs_error"] <= report["parity"]["tolerance"] == 1e-4
    assert report["shape_check"]["totals"]["params"] == 61_706
    assert [layer["output"] for layer in report["shape_check"]["layers"] if layer["kind"] == "Conv2d"] == [
        [6, 28, 28],
        [16, 10, 10],
        [120, 1, 1],
    ]
    assert list(version_dirs(out / "lenet")) == ["1"]


def test_second_export_adds_a_version_and_keeps_the_first(tmp_path: Path) -> None:
    build(_lenet(), _spec(), tmp_path)
    build(_lenet(), _spec(), tmp_path)
    config = load_model_config(tmp_path / "lenet")
    assert sorted(config.versions) == ["1", "2"]
    assert list(version_dirs(tmp_path / "lenet")) == ["1", "2"]


def test_existing_version_is_immutable(tmp_path: Path) -> None:
    build(_lenet(), _spec(version="3"), tmp_path)
    with pytest.raises(ExportError, match="version 3 exists; versions are immutable"):
        build(_lenet(), _spec(version="3"), tmp_path)


def test_versions_must_share_the_interface(tmp_path: Path) -> None:
    build(_lenet(), _spec(), tmp_path)
    five = tuple(str(i) for i in range(5))
    with pytest.raises(ExportError, match="Versions of one model share one interface"):
        build(get("lenet5").factory(num_classes=5), _spec(labels=five), tmp_path)


def _assert_nothing_left(out: Path) -> None:
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert leftovers == [], f"a failed export left {leftovers} behind"


def test_wrong_label_count_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"\[num-classes\] the model outputs \[10\] per image but 3 labels"):
        build(_lenet(), _spec(labels=("a", "b", "c")), tmp_path)
    _assert_nothing_left(tmp_path)


class _NonIntegral(nn.Module):
    """A 3×3 stride-2 conv on a 10×10 input: (10 − 3)/2 + 1 = 4.5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, stride=2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


def test_non_integral_layer_fails_in_strict_mode_and_passes_with_floor(tmp_path: Path) -> None:
    spec = _spec(name="odd", input_size=(1, 10, 10))
    with pytest.raises(ExportError, match=r"\[shape\] 1 layer\(s\) do not tile.*conv \(Conv2d\).*4\.5"):
        build(_NonIntegral(), spec, tmp_path)
    _assert_nothing_left(tmp_path)
    result = build(_NonIntegral(), _spec(name="odd", input_size=(1, 10, 10), rounding="floor"), tmp_path)
    layers = result.report["shape_check"]["layers"]
    assert layers[0]["output"] == [4, 4, 4]
    assert layers[0]["integral"] is False


def test_parity_failure_names_error_and_tolerance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Inject the fault at the ORT boundary: ORT's answer is shifted, as a broken kernel would shift it.
    import export.validate as validate

    real = validate.load_session

    class _Shifted:
        def __init__(self, session: ort.InferenceSession) -> None:
            self._session = session

        def get_inputs(self) -> list[ort.NodeArg]:
            return self._session.get_inputs()

        def run(self, names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [out + 0.01 for out in self._session.run(names, feeds)]

    monkeypatch.setattr("export.pipeline.load_session", lambda path: _Shifted(real(path)))
    with pytest.raises(
        ExportError, match=r"\[parity\] at batch 1 .* differ by 0\.01 \(max abs\) on outputs up to .* tolerance 0\.0001"
    ):
        build(_lenet(), _spec(), tmp_path)
    _assert_nothing_left(tmp_path)


def test_unexportable_module_is_reported_as_export_failure(tmp_path: Path) -> None:
    class _DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow cannot be traced
                return x.flatten(1)[:, :10]
            return -x.flatten(1)[:, :10]

    with pytest.raises(ExportError, match=r"\[onnx-export\] torch.onnx.export failed"):
        build(_DataDependent(), _spec(), tmp_path)
    _assert_nothing_left(tmp_path)


def test_report_is_plain_json(exported: tuple[Path, nn.Module]) -> None:
    out, _ = exported
    raw = json.loads((out / "lenet/config.json").read_text())
    assert raw["platform"] == "onnxruntime_onnx"
    assert raw["versions"]["1"]["export_report"]["opset"] == 18


def test_graph_with_an_ir_version_onnxruntime_cannot_read_is_named(exported: tuple[Path, nn.Module]) -> None:
    import onnx

    from export.validate import load_session

    out, _ = exported
    graph = onnx.load(str(out / "lenet/1/model.onnx"))
    graph.ir_version = 99  # what a too-new onnx release would write
    too_new = out.parent / "too_new.onnx"
    onnx.save(graph, str(too_new))
    with pytest.raises(
        ExportError, match=r"\[onnxruntime-load\] onnxruntime 1\.\d+\.\d+ cannot load the graph \(IR version 99\)"
    ):
        load_session(too_new)
