"""``python -m export``: each subcommand, its output, and each failure with its message and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from export.__main__ import main
from export.zoo import get


def test_shape_prints_the_formula(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shape", "227", "11", "--stride", "4"]) == 0
    assert capsys.readouterr().out.strip() == "(W − F + 2P)/S + 1 = (227 − 11 + 2·0)/4 + 1 = 55"


def test_shape_strict_rejects_and_floor_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shape", "10", "3", "--stride", "2"]) == 2
    err = capsys.readouterr().err
    assert "4.5 is not an integer" in err
    assert "S=1 (out 8)" in err
    assert main(["shape", "10", "3", "--stride", "2", "--floor"]) == 0
    assert capsys.readouterr().out.strip().endswith("= 4.5 → 4 (floor)")


def test_shape_with_dilation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shape", "32", "3", "--dilation", "2"]) == 0
    assert "= 28 (F_eff = 2·(3 − 1) + 1 = 5)" in capsys.readouterr().out


def test_summary_table_has_every_layer_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "28×28×6" in out
    assert "5×5×16" in out
    assert "61,706" in out  # total parameters
    assert "416.52K" in out  # total MACs
    assert out.count(" ok") == 12


def test_summary_json_equals_the_arithmetic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "lenet5", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["params"] == sum(p.numel() for p in get("lenet5").factory().parameters())
    conv1 = doc["layers"][0]
    assert (conv1["kind"], conv1["output"], conv1["params"], conv1["macs"]) == ("Conv2d", [6, 28, 28], 156, 117_600)


def test_summary_of_vgg16_matches_the_course_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "vgg16", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["params"] == 138_357_544
    volumes = [layer["volume"] for layer in doc["layers"] if layer["kind"] in ("Conv2d", "MaxPool2d")]
    assert volumes[:3] == ["224×224×64", "224×224×64", "112×112×64"]
    assert volumes[-1] == "7×7×512"


def test_unknown_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "lenet6"]) == 2
    assert "unknown architecture 'lenet6'; known: " in capsys.readouterr().err


def test_build_zoo_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "lenet5", "--out", str(tmp_path), "--name", "digits", "--version", "7"]) == 0
    assert "wrote " in capsys.readouterr().out
    assert (tmp_path / "digits/7/model.onnx").is_file()


def test_build_with_weights_and_labels(tmp_path: Path) -> None:
    model = get("lenet5").factory(num_classes=3)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    args = ["build", "lenet5", "--num-classes", "3", "--weights", str(tmp_path / "w.pt")]
    assert main([*args, "--labels", str(tmp_path / "labels.txt"), "--out", str(tmp_path / "m")]) == 0
    config = json.loads((tmp_path / "m/lenet5/config.json").read_text())
    assert config["labels"] == ["cat", "dog", "bird"]


def test_bad_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "w.pt").write_bytes(b"not a checkpoint")
    assert main(["build", "lenet5", "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "m")]) == 2
    assert "[weights]" in (err := capsys.readouterr().err)
    assert "is not a readable PyTorch checkpoint" in err
    assert not (tmp_path / "m").exists()


def test_weights_for_another_num_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(get("lenet5").factory(num_classes=10).state_dict(), tmp_path / "w.pt")
    args = ["build", "lenet5", "--num-classes", "5", "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "(does --num-classes match the checkpoint?)" in err
    assert "classifier.3.weight: checkpoint has [10, 84], model has [5, 84]" in err


def test_labels_file_with_wrong_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert main(["build", "lenet5", "--labels", str(tmp_path / "labels.txt"), "--out", str(tmp_path)]) == 2
    assert "has 2 labels, the model has 10 classes" in capsys.readouterr().err


def test_unimportable_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["build", "--module", "no_such_pkg.nets:make", "--input-size", "1,32,32", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "[module] cannot import 'no_such_pkg.nets'" in capsys.readouterr().err
    assert main(["build", "--module", "export.zoo", "--input-size", "1,32,32", "--out", str(tmp_path)]) == 2
    assert "must look like 'package.module:factory'" in capsys.readouterr().err
    assert main(["build", "--module", "export.zoo:nope", "--input-size", "1,32,32", "--out", str(tmp_path)]) == 2
    assert "has no callable 'nope'" in capsys.readouterr().err


def test_module_needs_input_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--module", "export.zoo.lenet:lenet5", "--out", str(tmp_path)]) == 2
    assert "--input-size C,H,W is required with --module" in capsys.readouterr().err


def test_user_module_end_to_end_in_a_subprocess(tmp_path: Path) -> None:
    """A user's own package on PYTHONPATH, exported through the real entry point."""
    (tmp_path / "mynets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny(num_classes=4):
                return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes))
            """
        )
    )
    cmd = [sys.executable, "-m", "export", "build", "--module", "mynets:tiny", "--num-classes", "4"]
    cmd += ["--input-size", "3,16,16", "--out", str(tmp_path / "repo")]
    env = {"PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[2]}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "[6/6] moving into" in done.stderr  # progress is shown
    config = json.loads((tmp_path / "repo/tiny/config.json").read_text())
    assert config["input"][0]["dims"] == [3, 16, 16]
    assert config["preprocessing"]["color_mode"] == "RGB"


def test_help_lists_subcommands() -> None:
    done = subprocess.run([sys.executable, "-m", "export", "--help"], capture_output=True, text=True, check=True)
    for command in ("summary", "shape", "build", "train-digits", "list"):
        assert command in done.stdout


def test_summary_piped_into_a_closed_reader_exits_quietly() -> None:
    """``python -m export summary resnet152 --format json | head -c 100``: the early close is no error.

    The JSON is far larger than a pipe's buffer, so the writer really meets the closed pipe.
    """
    with subprocess.Popen(["head", "-c", "100"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as reader:
        command = [sys.executable, "-m", "export", "summary", "resnet152", "--format", "json"]
        writer = subprocess.run(command, stdout=reader.stdin, stderr=subprocess.PIPE, check=False, timeout=120)
        head = reader.communicate(timeout=60)[0]
    assert head.startswith(b"{")
    assert b"Traceback" not in writer.stderr, writer.stderr.decode()
    assert writer.returncode == 0


@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        (["summary", "lenet5", "--width-mult", "0"], "--width-mult: '0': expected a number above 0"),
        (["summary", "lenet5", "--width-mult", "nan"], "--width-mult: 'nan': expected a number above 0"),
        (["summary", "lenet5", "--num-classes", "0"], "--num-classes: '0': expected a whole number of 1 or more"),
        (["summary", "lenet5", "--depth", "²"], "--depth: '²': expected a whole number of 1 or more"),
        (["build", "lenet5", "--out", "m", "--max-batch-size", "2000"], "batches of at most 1024"),
        (["build", "lenet5", "--out", "m", "--tolerance", "-1"], "--tolerance: '-1': expected a number above 0"),
        (["train-digits", "--epochs", "0"], "--epochs: '0': expected a whole number of 1 or more"),
        (["quantize", "m", "--repository", "r", "--calibration", "digits", "--samples", "0"], "--samples: '0'"),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(
    argv: list[str], refusal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A number no model can have is an argument error (exit 2, naming the option), not a traceback or late failure."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert refusal in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_shape_does_not_import_torch() -> None:
    """``shape`` is arithmetic only: it must answer without paying for torch's import (seconds on a small machine)."""
    code = "import sys; from export.__main__ import main; main(['shape', '10', '3']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
