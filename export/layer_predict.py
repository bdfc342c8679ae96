"""What the convolution arithmetic predicts for one layer: its output shape, whether it tiled, and its MACs.

Kept apart from :mod:`export.shapes`, which runs the network and assembles the rows, so each stays one job.
"""

from __future__ import annotations

import math

from torch import nn

from export.arithmetic import Arithmetic, compute

_SHAPE_PRESERVING = (
    nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Dropout, nn.Dropout2d,
    nn.BatchNorm2d, nn.LocalResponseNorm, nn.Identity, nn.Softmax,
)  # fmt: skip


def pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    """(H, W) from a constructor argument that may be one int for both."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _spatial(module: nn.Module, in_shape: list[int]) -> tuple[Arithmetic, Arithmetic]:
    """Arithmetic for a Conv2d/MaxPool2d/AvgPool2d along H and W, rounding as PyTorch would."""
    kernel = pair(module.kernel_size)  # type: ignore[arg-type]
    stride = pair(module.stride or module.kernel_size)  # type: ignore[arg-type]
    padding = pair(module.padding)  # type: ignore[arg-type]
    dilation = pair(getattr(module, "dilation", 1))
    ceil = bool(getattr(module, "ceil_mode", False))
    return (
        compute(in_shape[1], kernel[0], padding[0], stride[0], dilation[0], strict=False, ceil_mode=ceil),
        compute(in_shape[2], kernel[1], padding[1], stride[1], dilation[1], strict=False, ceil_mode=ceil),
    )


def predict(module: nn.Module, in_shape: list[int]) -> tuple[list[int] | None, bool, str, int]:
    """Predicted output shape, whether it was integral, the formula, and MACs at batch 1."""
    if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        if isinstance(module.padding, str):
            return None, True, "", 0  # 'same'/'valid' padding: no single formula to check
        h, w = _spatial(module, in_shape)
        channels = module.out_channels if isinstance(module, nn.Conv2d) else in_shape[0]
        macs = 0
        if isinstance(module, nn.Conv2d):
            kh, kw = pair(module.kernel_size)
            macs = channels * h.output * w.output * (module.in_channels // module.groups) * kh * kw
        formula = f"H: {h.formula()}; W: {w.formula()}" if h != w else w.formula()
        return [channels, h.output, w.output], h.integral and w.integral, formula, macs
    if isinstance(module, nn.Linear):
        return [module.out_features], True, "", module.in_features * module.out_features
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        oh, ow = pair(module.output_size)  # type: ignore[arg-type]
        return [in_shape[0], oh, ow], True, "", 0
    if isinstance(module, nn.Flatten):
        return [math.prod(in_shape)], True, "", 0
    if isinstance(module, _SHAPE_PRESERVING):
        return list(in_shape), True, "", 0
    return None, True, "", 0
