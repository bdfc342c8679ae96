"""``--pattern``: the seed's notation parsed, resolved (optional parts, VGG names), summarised and exported."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.__main__ import main
from export.errors import ExportError
from export.pattern import PatternError
from export.pattern_model import build_pattern, plan_pattern
from export.zoo.generic import generic_cnn

EXAMPLE = "INPUT 3x32x32 -> [[CONV3-32 -> RELU]*2 -> POOL2]*2 -> [FC128 -> RELU]*1 -> FC10"


def test_the_issue_example_unrolls_into_vgg_named_layers() -> None:
    plan = plan_pattern(EXAMPLE)
    assert [layer.name for layer in plan.layers] == [
        "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
        "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
        "flatten", "fc3", "relu3", "fc4",
    ]  # fmt: skip
    assert [layer.output for layer in plan.layers if layer.kind in ("pool", "flatten", "fc")] == [
        (32, 16, 16), (32, 8, 8), (2048,), (128,), (10,),
    ]  # fmt: skip
    assert (plan.input_size, plan.num_classes, plan.skipped) == ((3, 32, 32), 10, ())


def test_the_issue_example_has_the_hand_counted_parameters_and_equals_generic_cnn() -> None:
    # conv1_1: 3·3·3·32 + 32 = 896; conv1_2, conv2_1, conv2_2: 3·3·32·32 + 32 = 9,248 each;
    # two 2×2 pools take 32×32 to 8×8, so fc3: 32·8·8·128 + 128 = 262,272; fc4: 128·10 + 10 = 1,290.
    # 896 + 3·9,248 + 262,272 + 1,290 = 292,202.
    torch.manual_seed(0)
    ours = build_pattern(plan_pattern(EXAMPLE))
    torch.manual_seed(0)
    theirs = generic_cnn(
        input_size=(3, 32, 32), num_classes=10, convs_per_stage=2, stages=2, filters=32, fc_layers=1, fc_widths=128
    )
    assert sum(p.numel() for p in ours.parameters()) == 292_202
    pairs = list(zip(ours.parameters(), theirs.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)  # same shapes, same order, same initialisation


def test_notation_is_case_insensitive_with_free_spaces_and_unicode_arrows() -> None:
    plain = plan_pattern("INPUT 3x8x8 -> CONV3-4 -> RELU -> POOL2 -> FC2")
    loose = plan_pattern("input3×8×8→conv 3 - 4 →Relu→  pool2->fc2")
    assert [replace(layer, column=0) for layer in loose.layers] == [replace(layer, column=0) for layer in plain.layers]


def test_optional_pools_stop_halving_where_the_side_runs_out() -> None:
    plan = plan_pattern("INPUT 1x8x8 -> [CONV3-4 -> POOL2?]*4 -> FC3")
    assert [layer.name for layer in plan.layers] == [
        "conv1_1", "pool1", "conv2_1", "pool2", "conv3_1", "pool3", "conv4_1", "flatten", "fc5",
    ]  # fmt: skip
    (skipped,) = plan.skipped
    assert (skipped.source, skipped.column, skipped.after) == ("POOL2?", 28, "conv4_1")
    assert skipped.reason == "pool4 does not tile its 1×1 input: the side 1 is smaller than the pool's 2"


def test_an_optional_group_is_kept_or_skipped_whole() -> None:
    pattern = "INPUT 3x{0}x{0} -> [CONV3-4 -> POOL4]? -> FC2"
    assert [layer.name for layer in plan_pattern(pattern.format(8)).layers] == ["conv1_1", "pool1", "flatten", "fc2"]
    plan = plan_pattern(pattern.format(6))
    assert [layer.name for layer in plan.layers] == ["flatten", "fc1"]
    assert plan.skipped[0].source == "[CONV3-4 -> POOL4]?"
    assert "(W − F + 2P)/S + 1 = (6 − 4 + 2·0)/4 + 1 = 1.5 is not an integer" in plan.skipped[0].reason


def test_width_mult_scales_filters_and_hidden_fcs_but_not_the_classes() -> None:
    model = build_pattern(plan_pattern("INPUT 1x8x8 -> CONV3-8 -> POOL2 -> FC16 -> RELU -> FC3"), width_mult=0.5)
    assert (model.conv1_1.out_channels, model.fc2.in_features, model.fc2.out_features) == (4, 64, 8)
    assert model.fc3.out_features == 3


@pytest.mark.parametrize(
    ("pattern", "column", "message"),
    [
        ("", 1, "expected 'INPUT CxHxW' first, found end of pattern"),
        ("CONV3-8 -> FC10", 1, "expected 'INPUT CxHxW' first, found 'CONV'"),
        ("INPUT 3x32 -> FC10", 12, "expected 'x' before W (INPUT CxHxW), found '->'"),
        ("INPUT 3x0x32 -> FC10", 9, "the input's height H must be 1 to 1,000,000, found 0"),
        ("INPUT 3x4096x4096 -> FC10", 1,
         "INPUT 3x4096x4096 holds 50,331,648 values per image; the service takes at most 16,777,216 per row"),
        ("INPUT 3x8x8 -> FC99999999999999999999", 18, "a unit count n must be 1 to 1,000,000, found 9999"),
        ("INPUT 3x8x8 -> CONV٣-8 -> FC10", 20, "unexpected character '٣'"),
        ("INPUT 3x8x8 -> RELU -> [[RELU]*1000000]*1000000 -> FC2", 24,
         "unrolls to over 10,000 layers by here: lower a repeat"),
        ("INPUT 3x8x8 -> CONV332 -> FC10", 24,
         "expected '-' between the kernel size and the filter count (CONVk-n), found '->'"),
        ("INPUT 3x8x8 FC10", 13, "expected '->' after the input size, found 'FC'"),
        ("INPUT 3x8x8 -> CONV3-8 -> SOFTMAX -> FC10", 27,
         "unknown layer 'SOFTMAX'; expected CONVk-n, RELU, POOLk, FCn or '['"),
        ("INPUT 3x8x8 -> CONV3-8, FC10", 23, "unexpected character ','; layers are CONVk-n, RELU, POOLk, FCn"),
        ("INPUT 3x8x8 -> [CONV3-8 -> RELU -> FC10", 40,
         "expected '?', '->' or ']', found end of pattern (to close the '[' at column 16)"),
        ("INPUT 3x8x8 -> FC10]", 20, "expected '?', '->' or end of pattern, found ']' (no '[' is open)"),
        ("INPUT 3x8x8 -> [CONV3-8 -> RELU*2] -> FC10", 32, "expected '?', '->' or ']', found '*'"),
        ("INPUT 3x8x8 -> [CONV3-8]*0 -> FC10", 26, "a repeat count must be 1 to 1,000,000, found 0"),
        ("INPUT 3x8x8 -> [FC10]*", 23, "expected a repeat count after '*', found end of pattern"),
        ("INPUT 3x8x8 -> [FC10]? ? -> FC2", 24, "expected '->' or end of pattern, found '?'"),
        ("INPUT 3x8x8 -> [] -> FC10", 17, "expected a layer (CONVk-n, RELU, POOLk, FCn) or '[', found ']'"),
        ("INPUT 3x8x8 -> CONV4-8 -> FC10", 20,
         "CONV kernel size must be odd so that padding (k−1)/2 keeps the side, found 4"),
        ("INPUT 3x8x8 -> CONV3 -> FC10", 22,
         "expected '-' between the kernel size and the filter count (CONVk-n), found '->'"),
        ("INPUT 3x8x8 -> POOL0 -> FC10", 20, "a pool size k must be 1 to 1,000,000, found 0"),
        ("INPUT 3x8x8 -> FC10 ->", 23, "expected a layer (CONVk-n, RELU, POOLk, FCn) or '[', found end of pattern"),
        ("INPUT 3x8x8 -> FC10 -> RELU", 24, "the last layer must be FCn, whose n is the class count; found relu1"),
        ("INPUT 3x8x8 -> CONV3-8", 16, "the last layer must be FCn, whose n is the class count; found conv1_1"),
        ("INPUT 3x8x8 -> FC10 -> CONV3-8 -> FC2", 24,
         "CONV after an FC: the volume is already flattened; convolutions and pools come before the first FC"),
        ("INPUT 3x6x6 -> CONV3-8 -> POOL4 -> FC10", 27,
         "pool1 (POOL4) does not tile its 6×6 input: (W − F + 2P)/S + 1 = (6 − 4 + 2·0)/4 + 1 = 1.5 is not an "
         "integer; write POOL4? to skip it where it does not tile, or change INPUT"),
        ("INPUT 3x12x8 -> POOL2 -> POOL4 -> FC10", 26,
         "pool2 (POOL4) does not tile its 6×4 input: H: (W − F + 2P)/S + 1 = (6 − 4 + 2·0)/4 + 1 = 1.5 is not an "
         "integer; write POOL4?"),
        ("INPUT 3x8x2 -> POOL4 -> FC10", 16,
         "pool1 (POOL4) does not tile its 8×2 input: W: the side 2 is smaller than the pool's 4; write POOL4?"),
    ],
)  # fmt: skip
def test_every_error_points_at_its_column(pattern: str, column: int, message: str) -> None:
    with pytest.raises(PatternError) as caught:
        plan_pattern(pattern)
    assert (caught.value.column, caught.value.reason[: len(message)]) == (column, message)


def test_the_cli_shows_the_error_with_a_caret_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    pattern = "INPUT 3x32x32 -> [[CONV3-32 -> RELU*2] -> POOL2]*2 -> FC10"
    assert main(["summary", "--pattern", pattern]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: [pattern] column 36: expected '?', '->' or ']', found '*'",
        f"  {pattern}",
        "  " + " " * 35 + "^",
    ]


def test_summary_prints_the_zoo_table_for_a_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--pattern", EXAMPLE]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "16×16×32" in rows["pool1"]
    assert "262,272" in rows["fc3"]
    assert "292,202" in rows["total"]
    assert "skipped" not in out


def test_summary_lists_what_it_skipped_in_the_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    pattern = "INPUT 1x28x28 -> [[CONV3-8 -> RELU]*2 -> POOL2?]*3 -> FC10"
    assert main(["summary", "--pattern", pattern]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "skipped POOL2? (column 42) after relu3_2: pool3 does not tile its 7×7 input: "
        "(W − F + 2P)/S + 1 = (7 − 2 + 2·0)/2 + 1 = 3.5 is not an integer"
    )
    assert main(["summary", "--pattern", pattern, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pattern"]["layers"][-3:] == ["relu3_2", "flatten", "fc4"]
    assert [(s["source"], s["after"]) for s in doc["pattern"]["skipped"]] == [("POOL2?", "relu3_2")]
    assert doc["layers"][-1]["output"] == [10]


def test_pattern_and_architecture_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "lenet5", "--pattern", EXAMPLE]) == 2
    assert "argument --pattern: not allowed with argument arch" in capsys.readouterr().err
    assert main(["summary"]) == 2
    assert "one of the arguments arch --pattern is required" in capsys.readouterr().err


def test_options_the_pattern_already_states_must_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--pattern", EXAMPLE, "--input-size", "3,64,64"]) == 2
    assert "[input-size] --input-size (3, 64, 64) but the pattern's INPUT is (3, 32, 32)" in capsys.readouterr().err
    assert main(["build", "--pattern", EXAMPLE, "--name", "p", "--num-classes", "5", "--out", str(tmp_path)]) == 2
    assert "[num-classes] --num-classes 5 but the pattern ends in FC10" in capsys.readouterr().err
    assert main(["build", "--pattern", EXAMPLE, "--out", str(tmp_path)]) == 2
    assert "[name] --name is required with --pattern" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_help_documents_the_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("summary", "build"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "CONVk-n      k×k convolution, n filters, stride 1, zero padding (k−1)/2" in out
        assert "[ ... ]*N" in out


def test_build_exports_a_pattern_that_onnx_runtime_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pattern = "INPUT 1x12x12 -> [CONV3-4 -> RELU -> POOL2?]*3 -> FC3"  # the third pool (3×3) is skipped
    assert main(["build", "--pattern", pattern, "--name", "tiny", "--out", str(tmp_path)]) == 0
    assert "wrote " in capsys.readouterr().out
    config = json.loads((tmp_path / "tiny/config.json").read_text())
    assert config["input"][0]["dims"] == [1, 12, 12]
    assert config["labels"] == ["class_0", "class_1", "class_2"]
    report = config["versions"]["1"]["export_report"]
    assert report["architecture"] == pattern
    assert [layer["name"] for layer in report["shape_check"]["layers"]][-3:] == ["relu3_1", "flatten", "fc4"]
    session = ort.InferenceSession(str(tmp_path / "tiny/1/model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.random.default_rng(0).random((2, 1, 12, 12), dtype=np.float32)})
    assert logits.shape == (2, 3)


def test_a_network_too_large_to_hold_is_refused_before_anything_is_allocated() -> None:
    """An FC written before the pooling that should shrink its input: counted on the meta device, then refused."""
    plan = plan_pattern("INPUT 3x32x32 -> FC999999 -> FC10")
    with pytest.raises(ExportError, match=r"would have 3,082,996,927 parameters \(11\.5 GiB as float32\)"):
        build_pattern(plan)
