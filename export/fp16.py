"""fp16 graphs for GPU targets (``export build --precision fp16``): the conversion, and what proves it on a CPU.

The exported fp32 graph is rewritten by onnxruntime's float16 converter with its fp32 input and output kept
(``keep_io_types``): casts at both ends convert on the device, so the model keeps the interface its fp32 versions
have (TYPE_FP32 in config.json), clients and the REST preprocessing send what they always sent, and an fp16
version can join fp32 versions of the same model (the pipeline refuses versions of differing interfaces).

What a CPU proves. ONNX Runtime's CPU provider (1.31, x86) loads the fp16 graph but widens its weights back to
fp32 at load and computes in fp32: its parity against PyTorch proves the graph and its fp16-rounded weights, not fp16
arithmetic. So PyTorch's own fp16 forward on the CPU (weights and activations in fp16) is compared with its fp32
forward too, bounding what fp16 arithmetic costs this network. Both are held to the fp16 tolerance the service
holds a GPU to (``service/precision.py``); a GPU run of the graph itself is ``tests/gpu/test_fp16_gpu.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel
from torch import nn

from export.errors import ExportError
from export.validate import DEFAULT_TOLERANCE
from service.config_model import ModelConfig
from service.precision import TOLERANCES

#: The parity an fp16 graph is held to: what the service holds fp16 on a GPU to.
FP16_TOLERANCE = TOLERANCES[("tensorrt", "fp16")]
#: Images in PyTorch's fp16-vs-fp32 comparison: CPU fp16 convolutions are slow (ResNet-18: about 3 s for 4).
ARITHMETIC_BATCH = 4
PARITY_METHOD = (
    "ONNX Runtime CPUExecutionProvider on the fp16 graph vs PyTorch fp32; on x86 the CPU provider widens fp16 "
    "weights to fp32 and computes in fp32, so this proves the graph and its rounded weights, not fp16 arithmetic"
)
ARITHMETIC_METHOD = "PyTorch fp16 forward on the CPU (weights and activations in fp16) vs its fp32 forward"


@dataclass(frozen=True)
class Fp16Conversion:
    """The graph's size before and after conversion, in bytes."""

    fp32_bytes: int
    fp16_bytes: int


def parity_tolerance(precision: str, asked: float | None) -> float:
    """The parity bound of an export: ``asked`` (``--tolerance``) if given, else the graph precision's own."""
    if asked is not None:
        return asked
    return FP16_TOLERANCE if precision == "fp16" else DEFAULT_TOLERANCE


def convert_to_fp16(path: Path) -> Fp16Conversion:
    """Rewrite the checked fp32 graph at ``path`` in fp16, fp32 input and output kept, and check it again.

    Raises:
        ExportError: ``fp16-convert`` when onnx.checker rejects the converted graph.
    """
    fp32_bytes = path.stat().st_size
    graph = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    # The converter appends the input casts after the nodes reading them; onnx.checker requires topological order.
    OnnxModel.graph_topological_sort(graph.graph, is_deterministic=True)
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError("fp16-convert", f"onnx.checker rejected the fp16 graph: {err}") from err
    onnx.save(graph, str(path))
    return Fp16Conversion(fp32_bytes, path.stat().st_size)


def check_fp16_arithmetic(model: nn.Module, input_size: tuple[int, ...], tolerance: float) -> dict[str, Any]:
    """Compare PyTorch's fp16 forward of ``model`` with its fp32 forward on seeded inputs; returns the figures.

    A model with a layer PyTorch has no CPU fp16 kernel for (LRN's 3-D average pooling in AlexNet and GoogLeNet)
    is not refused: the figures say it was skipped, and why.

    Raises:
        ExportError: ``fp16-arithmetic`` when the difference, relative to the largest output (at least 1), exceeds
            ``tolerance`` or is not finite (an activation beyond fp16's range of 65504).
    """
    x = torch.randn(ARITHMETIC_BATCH, *input_size, generator=torch.Generator().manual_seed(2))
    figures: dict[str, Any] = {"method": ARITHMETIC_METHOD, "batch": ARITHMETIC_BATCH, "tolerance": tolerance}
    with torch.no_grad():
        expected = model.eval()(x)
        try:
            actual = copy.deepcopy(model).half()(x.half()).float()
        except (RuntimeError, NotImplementedError) as err:
            return {**figures, "skipped": f"PyTorch has no CPU fp16 kernel for a layer: {err}"}
    worst = float((actual - expected).abs().max())
    magnitude = max(1.0, float(expected.abs().max()))
    if not worst / magnitude <= tolerance:  # written so that NaN fails too
        raise ExportError(
            "fp16-arithmetic",
            f"PyTorch's fp16 forward differs from its fp32 forward by {worst:.3g} (max abs) on outputs up to "
            f"{magnitude:.3g}: {worst / magnitude:.3g} relative, tolerance {tolerance:g}; this network loses too "
            "much in fp16, export it in fp32",
        )
    return {**figures, "max_abs_error": worst, "max_output_magnitude": magnitude}


def fp16_report(
    conversion: Fp16Conversion, model: nn.Module, input_size: tuple[int, ...], tolerance: float
) -> dict[str, Any]:
    """The export report's ``fp16`` section: sizes, how parity was measured, PyTorch's fp16 arithmetic check."""
    return {
        "fp16": {
            "conversion": "onnxruntime.transformers.float16, fp32 input and output kept (keep_io_types)",
            "size_bytes": {"fp32": conversion.fp32_bytes, "fp16": conversion.fp16_bytes},
            "parity_method": PARITY_METHOD,
            "arithmetic": check_fp16_arithmetic(model, input_size, tolerance),
        }
    }


def fp16_sizes(report: dict[str, Any]) -> str:
    """The build command's note on an fp16 export's size (empty for fp32): ``; fp16 graph 330,091 bytes, …``."""
    if "fp16" not in report:
        return ""
    sizes = report["fp16"]["size_bytes"]
    return f"; fp16 graph {sizes['fp16']:,} bytes, {sizes['fp16'] / sizes['fp32']:.0%} of fp32's {sizes['fp32']:,}"


def refuse_mixed_versions(existing: ModelConfig | None, name: str, precision: str) -> None:
    """One model's versions share one graph precision, as they share one interface.

    A model's ``precision`` applies to every version, and an fp16 graph makes it ``fp16``: its fp32 versions would
    then run as fp16 TensorRT engines, and the whole model would no longer load on a CPU server.

    Raises:
        ExportError: ``repository``, naming the versions of the other precision, before any export work.
    """
    other = sorted(
        v for v, info in (existing.versions if existing else {}).items() if info.graph_precision != precision
    )
    if other:
        raise ExportError(
            "repository",
            f"{name} versions {other} are not {precision} graphs: a model's precision applies to all its versions "
            f"(an fp16 graph makes the whole model fp16 and GPU-only), so they share one; use another --name",
        )
