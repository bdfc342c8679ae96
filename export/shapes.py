"""Per-layer shape analysis: run the module once, predict every layer's output from the arithmetic, compare.

This is what ``python -m export summary`` prints and what every export records in its report: for each leaf
layer the output volume, activations, parameters and multiply-accumulates, with the prediction from
:mod:`export.arithmetic` checked against the shape PyTorch actually produced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from export.arithmetic import Arithmetic, ShapeError, compute

_SHAPE_PRESERVING = (
    nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Dropout, nn.Dropout2d,
    nn.BatchNorm2d, nn.LocalResponseNorm, nn.Identity, nn.Softmax,
)  # fmt: skip


@dataclass
class LayerReport:
    """One leaf layer's row in the summary."""

    name: str
    kind: str
    output: list[int]  # without the batch axis: [C, H, W] or [features]
    activations: int
    params: int
    macs: int
    predicted: list[int] | None  # None for layer types the arithmetic does not model
    integral: bool = True  # False where the arithmetic rounded (floor/ceil) instead of tiling exactly
    formula: str = ""

    @property
    def volume(self) -> str:
        """W×H×D as the CNN literature draws it (features alone for flat layers)."""
        if len(self.output) == 3:
            c, h, w = self.output
            return f"{w}×{h}×{c}"
        return "×".join(str(d) for d in self.output)


@dataclass
class ShapeReport:
    """The whole network: input, every leaf layer, totals."""

    input: list[int]
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        """Parameters of all leaf layers (each module counted once)."""
        return sum(layer.params for layer in self.layers)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of one forward pass at batch 1."""
        return sum(layer.macs for layer in self.layers)

    @property
    def total_activations(self) -> int:
        """Values held by the input and every layer output at batch 1 (forward pass, no reuse)."""
        return math.prod(self.input) + sum(layer.activations for layer in self.layers)

    def rounded_layers(self) -> list[LayerReport]:
        """Layers whose arithmetic did not tile their input exactly."""
        return [layer for layer in self.layers if not layer.integral]

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the layers and the totals (bytes assume float32)."""
        return {
            "input": self.input,
            "layers": [asdict(layer) | {"volume": layer.volume} for layer in self.layers],
            "totals": {
                "params": self.total_params,
                "macs": self.total_macs,
                "activations": self.total_activations,
                "activation_bytes": 4 * self.total_activations,
                "layers": len(self.layers),
            },
        }


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _spatial(module: nn.Module, in_shape: list[int]) -> tuple[Arithmetic, Arithmetic]:
    """Arithmetic for a Conv2d/MaxPool2d/AvgPool2d along H and W, rounding as PyTorch would."""
    kernel = _pair(module.kernel_size)  # type: ignore[arg-type]
    stride = _pair(module.stride or module.kernel_size)  # type: ignore[arg-type]
    padding = _pair(module.padding)  # type: ignore[arg-type]
    dilation = _pair(getattr(module, "dilation", 1))
    ceil = bool(getattr(module, "ceil_mode", False))
    return (
        compute(in_shape[1], kernel[0], padding[0], stride[0], dilation[0], strict=False, ceil_mode=ceil),
        compute(in_shape[2], kernel[1], padding[1], stride[1], dilation[1], strict=False, ceil_mode=ceil),
    )


def _predict(module: nn.Module, in_shape: list[int]) -> tuple[list[int] | None, bool, str, int]:
    """Predicted output shape, whether it was integral, the formula, and MACs at batch 1."""
    if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        if isinstance(module.padding, str):
            return None, True, "", 0  # 'same'/'valid' padding: no single formula to check
        h, w = _spatial(module, in_shape)
        channels = module.out_channels if isinstance(module, nn.Conv2d) else in_shape[0]
        macs = 0
        if isinstance(module, nn.Conv2d):
            kh, kw = _pair(module.kernel_size)
            macs = channels * h.output * w.output * (module.in_channels // module.groups) * kh * kw
        formula = f"H: {h.formula()}; W: {w.formula()}" if h != w else w.formula()
        return [channels, h.output, w.output], h.integral and w.integral, formula, macs
    if isinstance(module, nn.Linear):
        return [module.out_features], True, "", module.in_features * module.out_features
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        oh, ow = _pair(module.output_size)  # type: ignore[arg-type]
        return [in_shape[0], oh, ow], True, "", 0
    if isinstance(module, nn.Flatten):
        return [math.prod(in_shape)], True, "", 0
    if isinstance(module, _SHAPE_PRESERVING):
        return list(in_shape), True, "", 0
    return None, True, "", 0


def analyse(model: nn.Module, input_size: tuple[int, ...]) -> ShapeReport:
    """Run ``model`` once at batch 1 and report every leaf layer, checking it against the arithmetic.

    Args:
        model: the network; it is put in eval mode.
        input_size: (C, H, W) without the batch axis.

    Raises:
        ShapeError: when a layer's actual output differs from the arithmetic's prediction.
    """
    report = ShapeReport(input=list(input_size))
    counted: set[int] = set()
    mismatches: list[str] = []

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
            return
        in_shape = list(args[0].shape[1:])
        out_shape = list(output.shape[1:])
        predicted, integral, formula, macs = _predict(module, in_shape)
        params = 0 if id(module) in counted else sum(p.numel() for p in module.parameters(recurse=False))
        counted.add(id(module))
        name = names[id(module)]
        report.layers.append(
            LayerReport(
                name, type(module).__name__, out_shape, math.prod(out_shape), params, macs, predicted, integral, formula
            )  # fmt: skip
        )
        if predicted is not None and predicted != out_shape:
            mismatches.append(f"{name} ({type(module).__name__}): arithmetic predicts {predicted}, got {out_shape}")

    names = {id(m): n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if mismatches:
        raise ShapeError("output shapes disagree with the convolution arithmetic: " + "; ".join(mismatches))
    # Parameters outside leaf layers (rare: a bare nn.Parameter on a container) still count.
    stray = sum(p.numel() for p in model.parameters()) - report.total_params
    if stray:
        report.layers.append(LayerReport("(other parameters)", "Parameter", [], 0, stray, 0, None))
    return report


def enforce_strict(report: ShapeReport) -> None:
    """Strict mode: fail on any layer that does not tile its input exactly.

    Raises:
        ShapeError: listing every non-integral layer with its formula.
    """
    rounded = report.rounded_layers()
    if rounded:
        lines = "; ".join(f"{layer.name} ({layer.kind}): {layer.formula}" for layer in rounded)
        raise ShapeError(
            f"{len(rounded)} layer(s) do not tile their input (strict mode): {lines}. Fix the padding/stride, "
            "or pass --rounding floor to accept PyTorch's rounding"
        )
