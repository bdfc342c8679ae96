"""The config.json contract: every wrong type or value is refused naming the model, the field's path, the expected
type and the value given; left-out keys take the dataclass defaults; the file layout helpers."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tiny_models import tiny_config, tiny_model_bytes

from service.repository import (
    ConfigError,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    Preprocessing,
    TensorSpec,
    file_sha256,
    list_models,
    load_model_config,
    model_config_from_dict,
    version_dirs,
)

SOURCE = "test.json"
WHERE = f"{SOURCE} (model 'tiny')"
FieldPath = tuple[str | int, ...]


def document(**overrides: Any) -> dict[str, Any]:
    """A valid config.json for the tiny model, as the service would read it."""
    return tiny_config("tiny", tiny_model_bytes(), **overrides)


def with_value(doc: dict[str, Any], path: FieldPath, value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``value`` at ``path``, creating objects along the way."""
    doc = copy.deepcopy(doc)
    parent: Any = doc
    for key in path[:-1]:
        parent = parent.setdefault(key, {}) if isinstance(key, str) else parent[key]
    parent[path[-1]] = value
    return doc


def refusal(doc: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        model_config_from_dict(doc, source=SOURCE)
    return str(caught.value)


WRONG_TYPES = [
    (("max_batch_size",), "x", '"x" (string)', "an integer from 1 to 1024"),
    (("max_batch_size",), True, "true (boolean)", "an integer from 1 to 1024"),
    (("max_batch_size",), 2.5, "2.5 (number)", "an integer from 1 to 1024"),
    (("max_batch_size",), 0, "0 (integer)", "an integer from 1 to 1024"),
    (("max_batch_size",), 1025, "1025 (integer)", "an integer from 1 to 1024"),
    (("input",), "x", '"x" (string)', "a list of objects"),
    (("input", 0), 3, "3 (integer)", "an object"),
    (("input", 0, "name"), 7, "7 (integer)", "a string"),
    (("input", 0, "data_type"), "FLOAT", '"FLOAT" (string)', "one of 'TYPE_BOOL'"),
    (("input", 0, "dims"), 5, "5 (integer)", "a list of integers"),
    (("input", 0, "dims"), [3, "8", 8], '[3, "8", 8] (list)', "a list of integers"),
    (("input", 0, "dims"), [-1, 3, 8, 8], "[-1, 3, 8, 8]", "positive sizes with the batch axis left out"),
    (("output", 0, "dims"), [], "[]", "positive sizes with the batch axis left out"),
    (("dynamic_batching",), [], "[] (list)", "an object"),
    (("dynamic_batching", "max_queue_delay_microseconds"), "soon", '"soon" (string)', "an integer from 0 to 1000000"),
    (("dynamic_batching", "max_queue_delay_microseconds"), 10**9, "1000000000", "an integer from 0 to 1000000"),
    (("dynamic_batching", "preferred_batch_size"), 4, "4 (integer)", "a list of integers"),
    (("dynamic_batching", "default_queue_policy"), None, "null (null)", "an object"),
    (("dynamic_batching", "default_queue_policy", "max_queue_size"), "x", '"x" (string)', "an integer from 1 to 16384"),
    (("dynamic_batching", "default_queue_policy", "max_queue_size"), True, "true (boolean)", "an integer from 1 to"),
    (("dynamic_batching", "default_queue_policy", "max_queue_size"), 10**9, "1000000000", "an integer from 1 to 16384"),
    (("dynamic_batching", "default_queue_policy", "default_timeout_microseconds"), -1, "-1", "an integer from 0 to"),
    (
        ("dynamic_batching", "default_queue_policy", "default_timeout_microseconds"),
        10**12,
        "1000000000000",
        "an integer from 0 to 600000000",
    ),
    (("instance_group",), 3, "3 (integer)", "an object"),
    (("instance_group", "count"), "many", '"many" (string)', "an integer from 1 to 16"),
    (("instance_group", "count"), 100, "100 (integer)", "an integer from 1 to 16"),
    (("instance_group", "kind"), "KIND_TPU", '"KIND_TPU" (string)', "one of 'KIND_AUTO', 'KIND_CPU', 'KIND_GPU'"),
    (("preprocessing",), 3, "3 (integer)", "an object"),
    (("preprocessing", "resize"), "8", '"8" (string)', "an integer from 1 to 8192"),
    (("preprocessing", "resize"), 10**6, "1000000", "an integer from 1 to 8192"),
    (("preprocessing", "crop"), [8], "[8] (list)", "a list of 2 integers from 1 to 8192"),
    (("preprocessing", "mean"), "x", '"x" (string)', "a list of numbers"),
    (("preprocessing", "std"), [1, "a", 1], '[1, "a", 1] (list)', "a list of numbers"),
    (("preprocessing", "invert"), 1, "1 (integer)", "a boolean (true or false)"),
    (("preprocessing", "color_mode"), 3, "3 (integer)", "one of 'L', 'RGB'"),
    (("preprocessing", "interpolation"), "lanczos", '"lanczos" (string)', "one of 'bilinear', 'bicubic', 'nearest'"),
    (("preprocessing", "layout"), "NHWC", '"NHWC" (string)', "one of 'NCHW'"),
    (("labels",), 7, "7 (integer)", "a list of strings"),
    (("labels",), [0, 1, 2, 3], "[0, 1, 2, 3] (list)", "a list of strings"),
    (("versions",), [], "[] (list)", "an object"),
    (("versions", "1"), "abc", '"abc" (string)', "an object"),
    (("versions", "1", "sha256"), 5, "5 (integer)", "a string"),
    (("versions", "1", "export_report"), [], "[] (list)", "an object"),
    (("execution_providers",), "cpu", '"cpu" (string)', "a list of strings"),
    (("platform",), "tensorflow_graphdef", '"tensorflow_graphdef" (string)', "one of 'onnxruntime_onnx'"),
]


def dotted(path: FieldPath) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


@pytest.mark.parametrize(
    ("path", "value", "shown", "expected"), WRONG_TYPES, ids=[f"{dotted(p)}={v!r}" for p, v, *_ in WRONG_TYPES]
)
def test_a_wrong_type_or_value_is_refused_naming_the_field(
    path: FieldPath, value: Any, shown: str, expected: str
) -> None:
    message = refusal(with_value(document(), path, value))
    assert message.startswith(f"{WHERE}: {dotted(path)} is {shown}"), message
    assert f"expected {expected}" in message


@pytest.mark.parametrize(
    "path",
    [
        ("max_batch_size",),
        ("input",),
        ("output",),
        ("input", 0, "dims"),
        ("output", 0, "name"),
        ("preprocessing", "resize"),
        ("versions", "1", "sha256"),
    ],
    ids=dotted,
)
def test_a_missing_required_field_is_named_by_its_path(path: FieldPath) -> None:
    doc = document()
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    assert refusal(doc) == f"{WHERE}: missing required field '{dotted(path)}'"


def test_a_document_that_is_not_an_object_or_lacks_a_name_is_refused_naming_the_source() -> None:
    assert refusal([]) == f"{SOURCE}: the document is [] (list), expected an object"
    assert refusal(with_value(document(), ("name",), 5)) == f"{SOURCE}: name is 5 (integer), expected a string"
    assert "name is 'a b', expected 1 to 255 characters from A-Z a-z 0-9 _ . -" in refusal(
        with_value(document(), ("name",), "a b")
    )
    for name in (".", "..", "x" * 256, "tiny\n"):
        assert "and not '.' or '..'" in refusal(with_value(document(), ("name",), name))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"dynamic_batching": {"preferred_batch_size": [4, 9]}},
            r"preferred_batch_size \[9\] outside 1..max_batch_size=8",
        ),
        ({"labels": ["a", "b"]}, r"labels has 2 entries but output 'logits' has 4 classes"),
        (
            {"preprocessing": {"resize": 8, "color_mode": "L"}},
            r"yields \[1, 8, 8\] but input 'input' has dims \[3, 8, 8\]",
        ),
        ({"preprocessing": {"resize": 8, "mean": [0.5]}}, r"preprocessing.mean/std need 3 entries"),
        ({"preprocessing": {"resize": 6, "crop": [8, 8]}}, r"preprocessing.resize 6 is smaller than crop \[8, 8\]"),
        ({"output": []}, "needs at least one input and one output"),
        ({"dynamic_batching": {"preferred_batch_size": [1] * 17}}, r"preferred_batch_size has 17 sizes, at most 16"),
        (
            {"input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 4096, 4096]}]},
            r"input\[0\].dims is \[3, 4096, 4096\]: 50331648 elements, at most 16777216",
        ),
    ],
)
def test_values_that_disagree_with_each_other_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        model_config_from_dict(document(**overrides), source=SOURCE)
    assert str(caught.value).startswith(WHERE)


def test_left_out_keys_take_the_dataclass_defaults() -> None:
    minimal = {key: document()[key] for key in ("name", "max_batch_size", "input", "output")}
    config = model_config_from_dict(minimal)
    tensor = TensorSpec("input", "TYPE_FP32", (3, 8, 8))
    assert config == ModelConfig("tiny", 8, (tensor,), (TensorSpec("logits", "TYPE_FP32", (4,)),))
    assert config.dynamic_batching == DynamicBatching()
    assert config.instance_group == InstanceGroup()
    pre = model_config_from_dict({**minimal, "preprocessing": {"resize": 8}}).preprocessing
    assert pre == Preprocessing(resize=8, crop=(8, 8))


def test_a_config_survives_the_round_trip_through_its_dict() -> None:
    config = model_config_from_dict(document(instance_group={"count": 2, "kind": "KIND_CPU"}))
    assert model_config_from_dict(config.to_dict()) == config


def test_tritons_list_of_instance_groups_serves_the_first() -> None:
    config = model_config_from_dict(document(instance_group=[{"count": 3}, {"count": 1}]))
    assert config.instance_group == InstanceGroup(count=3)
    message = refusal(document(instance_group=[{"count": 0}]))
    assert message.startswith(f"{WHERE}: instance_group[0].count is 0 (integer)")


def test_load_model_config_refuses_bad_json_and_a_folder_named_otherwise(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    with pytest.raises(ConfigError, match="no config.json in model folder"):
        load_model_config(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model_config(folder)
    (folder / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model_config(folder)
    (folder / "config.json").write_text(json.dumps(with_value(document(), ("name",), "other")))
    with pytest.raises(ConfigError, match="name is 'other' but the folder is 'tiny'"):
        load_model_config(folder)


def test_layout_helpers_and_digest(tmp_path: Path) -> None:
    model = tiny_model_bytes()
    for version in ("10", "2"):
        (tmp_path / "tiny" / version).mkdir(parents=True)
        (tmp_path / "tiny" / version / "model.onnx").write_bytes(model)
    (tmp_path / "tiny" / "3").mkdir()  # no model.onnx: not a version
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(document()))
    (tmp_path / "stray").mkdir()
    assert list_models(tmp_path) == ["tiny"]
    assert list(version_dirs(tmp_path / "tiny")) == ["2", "10"]
    assert file_sha256(tmp_path / "tiny" / "2" / "model.onnx") == hashlib.sha256(model).hexdigest()
    assert load_model_config(tmp_path / "tiny").versions["1"].sha256 == hashlib.sha256(model).hexdigest()


def test_an_operators_config_json_beyond_a_bound_is_refused_like_a_load_request(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(document(instance_group={"count": 100})))
    with pytest.raises(ConfigError, match=r"instance_group.count is 100 \(integer\), expected an integer from 1 to 16"):
        load_model_config(folder)
