"""The models the GPU check serves: a zoo CNN taking uint8 NCHW pixels, exported by the project's own pipeline.

``export_uint8`` wraps the network so normalisation happens in the graph (``x * scale + bias`` per channel, the
torchvision ImageNet statistics), exports the wrapper with ``export.pipeline.build`` (shape check, ONNX export,
ORT load, parity), then grafts a ``Cast`` from uint8 in front of the graph and rewrites config.json to match
(``TYPE_UINT8`` input, no image preprocessing, the new sha256). The pipeline itself only writes FP32 inputs; if the
graft fails the FP32 model stays and the report says so. Needs torch and onnx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from export.errors import ExportError
from export.onnx_export import OPSET
from export.pipeline import ExportSpec, build
from export.zoo import get
from service.repository import CONFIG_FILENAME, IMAGENET_MEAN, IMAGENET_STD, file_sha256, load_model_config


class Uint8Pixels(nn.Module):
    """``net`` behind in-graph normalisation: takes 0..255 pixels, computes ``(x / 255 - mean) / std``."""

    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("bias", -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() * self.scale + self.bias)


@dataclass(frozen=True)
class Exported:
    """A model in the work repository, the torch module it came from, and its input's data type."""

    name: str
    module: nn.Module
    input_size: tuple[int, int, int]
    datatype: str  # UINT8, or FP32 when the graft failed
    note: str


def export_uint8(arch: str, repository: Path, max_batch_size: int) -> Exported:
    """Export zoo ``arch`` (random weights) as ``<arch>_u8`` into ``repository`` and graft its uint8 input."""
    torch.manual_seed(0)
    entry = get(arch)
    module = Uint8Pixels(entry.factory(num_classes=entry.num_classes)).eval()
    name = f"{arch}_u8"
    spec = ExportSpec(
        name=name,
        input_size=entry.input_size,
        labels=tuple(f"class_{i}" for i in range(entry.num_classes)),
        version="1",
        rounding=entry.rounding,
        max_batch_size=max_batch_size,
    )
    architecture = f"{arch} behind uint8 normalisation (tests/gpu)"
    exporter = "torch.export (dynamo)"
    try:
        result = build(module, spec, repository, architecture=architecture)
    except ExportError as err:
        if err.check != "onnx-export":
            raise
        # The target's torch may not pair with the staged onnxscript: the same pipeline, the TorchScript exporter.
        exporter = f"TorchScript exporter (dynamo export failed: {str(err)[:200]})"
        with mock.patch("export.pipeline.export_onnx", torchscript_export):
            result = build(module, spec, repository, architecture=architecture)
    try:
        graft_uint8_input(result.model_path)
        rewrite_config(repository / name, "1")
    except Exception as err:  # any failure leaves a working FP32 model, which the report names
        fp32 = f"the uint8 graft failed ({type(err).__name__}: {err}); serving FP32 input (0..255 pixel values)"
        return Exported(name, module, entry.input_size, "FP32", f"{fp32}; {exporter}")
    return Exported(name, module, entry.input_size, "UINT8", f"uint8 input, normalisation in the graph; {exporter}")


def torchscript_export(
    model: nn.Module, input_size: tuple[int, ...], path: Path, *, max_batch_size: int = 1024, **_: Any
) -> onnx.ModelProto:
    """``export.onnx_export.export_onnx``'s contract (input/logits, dynamic batch, checked) with the old exporter."""
    sample = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(model, (sample,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)  # fmt: skip
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    return graph


def graft_uint8_input(path: Path) -> None:
    """Make the graph's first input uint8, cast to float at once; the rest of the graph is unchanged."""
    model = onnx.load(str(path))
    graph = model.graph
    old = graph.input[0]
    cast_name = f"{old.name}__as_float"
    for node in graph.node:
        node.input[:] = [cast_name if name == old.name else name for name in node.input]
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    new = helper.make_tensor_value_info(old.name, TensorProto.UINT8, dims)
    cast = helper.make_node("Cast", [old.name], [cast_name], to=TensorProto.FLOAT, name="uint8_to_float")
    graph.node.insert(0, cast)
    graph.input.remove(old)
    graph.input.insert(0, new)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def rewrite_config(model_dir: Path, version: str) -> None:
    """config.json for the grafted graph: UINT8 input, tensors only (no image preprocessing), the new digest."""
    path = model_dir / CONFIG_FILENAME
    document = json.loads(path.read_text())
    document["input"][0]["data_type"] = "TYPE_UINT8"
    document.pop("preprocessing", None)
    info = document["versions"][version]
    info["sha256"] = file_sha256(model_dir / version / "model.onnx")
    info["export_report"]["input_graft"] = "uint8 Cast in front of the pipeline's FP32 graph (tests/gpu)"
    path.write_text(json.dumps(document, indent=2) + "\n")
    load_model_config(model_dir)  # the service's own parser must accept it


def reference(exported: Exported, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """PyTorch fp32 logits on the CPU (no TF32 there), the reference every precision is compared with."""
    with torch.no_grad():
        logits = exported.module(torch.from_numpy(images))
    return np.asarray(logits.numpy(), dtype=np.float32)


def variant(base: Path, name: str, out: Path, changes: dict[str, Any]) -> Path:
    """A repository at ``out`` serving ``base/name`` with config.json keys changed (version folders linked)."""
    model_dir = out / name
    model_dir.mkdir(parents=True, exist_ok=True)
    document = json.loads((base / name / CONFIG_FILENAME).read_text())
    document.update(changes)
    (model_dir / CONFIG_FILENAME).write_text(json.dumps(document, indent=2) + "\n")
    for version in (p for p in (base / name).iterdir() if p.is_dir() and p.name.isdigit()):
        link = model_dir / version.name
        if not link.exists():
            link.symlink_to(version.resolve(), target_is_directory=True)
    return out
