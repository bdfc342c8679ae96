"""``summary`` prints the tables as the papers print them: module rows, parameter sharing, weights without biases.

GoogLeNet's Table 1 module outputs and ResNet's stage outputs are reproduced exactly; AlexNet's CONV1 shows the
seed's 105,705,600 vs 34,944; VGG-16's weights "not counting biases" check line by line. Wrong sizes and paths
exit 2 with a message naming the layer or path, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from export import commands
from export.__main__ import main
from export.render import format_summary
from export.shapes import ShapeReport, analyse

# Szegedy et al., 2015, Table 1: output size of each Inception module (W×H×D).
GOOGLENET_TABLE_1 = {
    "inception3a": "28×28×256",
    "inception3b": "28×28×480",
    "inception4a": "14×14×512",
    "inception4b": "14×14×512",
    "inception4c": "14×14×512",
    "inception4d": "14×14×528",
    "inception4e": "14×14×832",
    "inception5a": "7×7×832",
    "inception5b": "7×7×1024",
}


def _summary_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["summary", *args, "--format", "json"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI expecting exit 2; returns stderr, which must be one clear message, not a traceback."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def googlenet() -> ShapeReport:
    """One analysis of GoogLeNet for the tests below (the CLI's path: ``commands.summary``)."""
    return commands.summary("googlenet", None, None, 1.0)


def test_googlenet_module_rows_reproduce_table_1(googlenet: ShapeReport) -> None:
    full = googlenet.to_dict()
    folded = dataclasses.replace(googlenet, max_depth=1).to_dict()
    modules = {row["name"]: row["volume"] for row in full["layers"] if row["module"]}
    assert modules == GOOGLENET_TABLE_1
    assert full["totals"] == folded["totals"]
    assert full["totals"]["params"] == 6_998_552
    assert full["totals"]["layers"] == 132
    assert {row["depth"] for row in folded["layers"]} == {1}
    # Folded, each module's row sums its layers: the rows shown add up to the total.
    assert sum(row["params"] for row in folded["layers"]) == folded["totals"]["params"]
    names = [row["name"] for row in full["layers"]]
    assert names.index("inception4e.branch4.1.0") < names.index("inception4e") < names.index("maxpool4")


def test_googlenet_table_shows_module_rows_within_130_columns(googlenet: ShapeReport) -> None:
    lines = format_summary(dataclasses.replace(googlenet, max_depth=1)).splitlines()
    assert max(len(line) for line in lines) <= 130
    row = next(line for line in lines if line.startswith("inception4e "))
    assert row.split()[:3] == ["inception4e", "Inception", "14×14×832"]
    assert lines[0].split()[-5:] == ["params", "no", "sharing", "MACs", "check"]
    assert next(line for line in lines if line.startswith("total")).split()[1:3] == ["132", "layers"]


def test_resnet18_stages_and_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _summary_json(capsys, "resnet18")
    rows = {row["name"]: row for row in doc["layers"]}
    stages = [(name, rows[name]["volume"], rows[name]["depth"]) for name in ("layer1", "layer2", "layer3", "layer4")]
    assert stages == [("layer1", "56×56×64", 1), ("layer2", "28×28×128", 1), ("layer3", "14×14×256", 1),
                      ("layer4", "7×7×512", 1)]  # fmt: skip
    assert (rows["layer2.0"]["kind"], rows["layer2.0"]["depth"], rows["layer2.0"]["module"]) == ("BasicBlock", 2, True)
    assert (rows["layer2.0.conv1"]["depth"], rows["layer2.0.conv1"]["module"]) == (3, False)
    assert rows["conv1"]["depth"] == 1
    assert "layer2.0.downsample" not in rows  # a plain conv → batch-norm chain: its BatchNorm row already shows it
    blocks = rows["layer4.0"]["params"] + rows["layer4.1"]["params"]
    layers = sum(row["params"] for row in doc["layers"] if row["name"].startswith("layer4.") and not row["module"])
    assert rows["layer4"]["params"] == blocks == layers  # a module row sums its subtree
    assert doc["totals"]["params"] == 11_689_512  # module rows count nothing twice
    folded = _summary_json(capsys, "resnet18", "--depth", "2")
    assert folded["totals"] == doc["totals"]
    assert folded["max_depth"] == 2
    assert max(row["depth"] for row in folded["layers"]) == 2


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())  # a plain chain: no row
        self.block = _Residual()  # adds its input: a new volume
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def test_only_containers_with_a_new_volume_become_rows() -> None:
    report = analyse(_Net(), (1, 6, 6))
    assert [(row.name, row.depth, row.module) for row in report.layers] == [
        ("stem.0", 1, False), ("stem.1", 1, False), ("block.conv", 2, False), ("block", 1, True),
        ("head.0", 1, False), ("head.1", 1, False), ("head.2", 1, False),
    ]  # fmt: skip
    assert report.total_params == sum(p.numel() for p in _Net().parameters())


def test_alexnet_conv1_without_parameter_sharing(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _summary_json(capsys, "alexnet")
    conv1 = doc["layers"][0]
    assert (conv1["name"], conv1["volume"]) == ("features.conv1", "55×55×96")
    assert conv1["unshared_params"] == 55 * 55 * 96 * (11 * 11 * 3 + 1) == 105_705_600
    assert conv1["params"] == 34_944
    fc6 = next(row for row in doc["layers"] if row["name"] == "classifier.fc6")
    assert fc6["unshared_params"] == fc6["params"]  # a fully connected layer shares nothing
    totals = doc["totals"]
    convs = [row for row in doc["layers"] if row["kind"] == "Conv2d"]
    extra = sum(row["unshared_params"] - row["params"] for row in convs)
    assert totals["unshared_params"] == totals["params"] + extra
    assert totals["params"] == 62_378_344


def test_vgg16_weights_not_counting_biases(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _summary_json(capsys, "vgg_d", "--no-biases")
    assert doc["counts_biases"] is False
    convs = [row for row in doc["layers"] if row["kind"] == "Conv2d"]
    fcs = [row for row in doc["layers"] if row["kind"] == "Linear"]
    assert convs[0]["params"] == 3 * 3 * 3 * 64 == 1_728
    assert convs[0]["unshared_params"] == 224 * 224 * 64 * (3 * 3 * 3)  # no bias in this view either
    assert convs[1]["params"] == 3 * 3 * 64 * 64
    assert [row["params"] for row in fcs] == [7 * 7 * 512 * 4096, 4096 * 4096, 4096 * 1000]
    assert fcs[0]["params"] == 102_760_448
    biases = 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512 + 4096 + 4096 + 1000
    assert doc["totals"]["params"] == 138_357_544 - biases == 138_344_128


def test_no_biases_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "lenet5", "--no-biases"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[5] == "weights"
    assert "weights (biases not counted)" in lines[-2]
    c1 = next(line for line in lines if line.startswith("features.0 "))
    assert c1.split()[4:6] == ["150", "117,600"]  # 5·5·1·6, and 28·28·6 × 5·5·1 without sharing


def test_wrong_input_size_names_the_layer(capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, "summary", "alexnet", "--input-size", "3,224,224")
    assert err.startswith("error: the forward pass at input 3×224×224 failed in classifier.fc6 (Linear)")
    assert "its input is [6400]; it expects 9216 input features" in err
    assert "features.conv1 rounded" in err
    assert "= 54.25" in err


def test_user_module_at_the_wrong_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["build", "--module", "export.zoo.lenet:lenet5", "--input-size", "3,32,32", "--out", str(tmp_path / "m")]
    err = _fails(capsys, *args)
    assert "failed in features.0 (Conv2d): its input is [3, 32, 32]; it expects 1 channels of at least 5×5" in err
    err = _fails(capsys, *args[:4], "1,20,20", *args[5:])
    assert "failed in features.6 (Conv2d): its input is [16, 2, 2]; it expects 16 channels of at least 5×5" in err
    assert not (tmp_path / "m").exists()


def test_out_pointing_at_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (target := tmp_path / "models.txt").write_text("not a folder")
    err = _fails(capsys, "build", "lenet5", "--out", str(target))
    assert f"--out {target} is a file; --out must name a folder" in err
    inside = _fails(capsys, "train-digits", "--out", str(target / "models"))  # refused before training
    assert f"--out {target / 'models'}: {target} is a file; --out must name a folder" in inside
    assert target.read_text() == "not a folder"


def test_floor_and_ceil_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, "shape", "10", "3", "--floor", "--ceil")
    assert "argument --ceil: not allowed with argument --floor" in err
    assert "not allowed" in _fails(capsys, "shape", "10", "3", "--ceil", "--floor")
    assert "--depth: '0': expected a whole number of 1 or more" in _fails(capsys, "summary", "lenet5", "--depth", "0")
