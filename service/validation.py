"""Refuse a model whose config.json disagrees with its ONNX graph or its recorded digest, naming the field.

Checked once at load, against what ONNX Runtime reports for the graph: input/output names, element types, rank,
every fixed dimension, and whether the batch axis can hold ``max_batch_size`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.datatypes import ORT_TO_V2
from service.repository import ConfigError, ModelConfig, TensorSpec, file_sha256


def verify_digest(config: ModelConfig, version: str, path: Path) -> None:
    """Check ``versions.<version>.sha256`` against the file (guards against a half-copied or swapped model)."""
    where = f"model '{config.name}' config.json"
    info = config.versions.get(version)
    if info is None:
        raise ConfigError(
            f"{where}: versions has no entry for version folder '{version}' (has {sorted(config.versions)}); "
            "re-export the model so config.json records its sha256"
        )
    actual = file_sha256(path)
    if actual != info.sha256:
        raise ConfigError(
            f"{where}: versions.{version}.sha256 is {info.sha256} but {path} hashes to {actual}; "
            "the file changed after export: re-export, or restore the file"
        )


def _check_tensor(where: str, spec: TensorSpec, node: Any, max_batch_size: int) -> None:
    graph_type = ORT_TO_V2.get(node.type, node.type)
    if graph_type != spec.datatype:
        raise ConfigError(f"{where}: data_type is {spec.data_type} but the ONNX graph has {node.type} ({graph_type})")
    shape = list(node.shape)
    if len(shape) != len(spec.dims) + 1:
        raise ConfigError(
            f"{where}: dims {list(spec.dims)} plus the batch axis is rank {len(spec.dims) + 1}, "
            f"but the ONNX graph's tensor is rank {len(shape)} with shape {shape}"
        )
    batch = shape[0]
    if isinstance(batch, int) and batch > 0 and batch < max_batch_size:
        raise ConfigError(
            f"{where}: the ONNX graph fixes the batch axis to {batch} but max_batch_size is {max_batch_size}; "
            "export with a dynamic batch axis or lower max_batch_size"
        )
    for i, (want, got) in enumerate(zip(spec.dims, shape[1:], strict=True)):
        if isinstance(got, int) and got > 0 and got != want:
            raise ConfigError(f"{where}: dims[{i}] is {want} but the ONNX graph has {got} (graph shape {shape})")


def _check_group(kind: str, config: ModelConfig, specs: Sequence[TensorSpec], nodes: Sequence[Any]) -> None:
    where = f"model '{config.name}' config.json"
    by_name = {node.name: node for node in nodes}
    wanted = [spec.name for spec in specs]
    if sorted(wanted) != sorted(by_name):
        raise ConfigError(f"{where}: {kind} names are {wanted} but the ONNX graph's {kind}s are {sorted(by_name)}")
    for i, spec in enumerate(specs):
        _check_tensor(f"{where}: {kind}[{i}] '{spec.name}'", spec, by_name[spec.name], config.max_batch_size)


def validate_graph(config: ModelConfig, session: Any) -> None:
    """Compare config.json's inputs and outputs with an ``ort.InferenceSession``'s graph.

    Raises:
        ConfigError: naming the model, the field (``input[0] 'x': dims[1]``), the configured and the graph values.
    """
    _check_group("input", config, config.input, session.get_inputs())
    _check_group("output", config, config.output, session.get_outputs())
