"""A builder for the common CNN pattern INPUT → [[CONV → RELU]*N → POOL?]*M → [FC → RELU]*K → FC (CS231n).

Convs are k×k with padding k//2 (k odd), so they keep the side; pools are 2×2/2 and need an even side, so every
net this builder accepts tiles exactly (rounding="strict"). Two zoo entries come from it, both 3×32×32 with 10
classes: ``small_cnn`` (N=2, M=3, filters 32/64/128, FC 256; compute-bound on a CPU) and ``tiny_cnn`` (N=1, M=3,
filters 16/32/64, FC 128; overhead-bound, the benchmarks' model for the cost of the request path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from export.zoo._common import init_weights, scaled


def _at_least(name: str, value: int, least: int) -> None:
    """Reject a count below its minimum."""
    if value < least:
        raise ValueError(f"{name} must be ≥ {least}, got {value}")


def _per_layer(name: str, value: int | Sequence[int], count: int, count_name: str) -> list[int]:
    """Expand a single int to ``count`` copies, or check a list has ``count`` positive entries."""
    values = [value] * count if isinstance(value, int) else list(value)
    if len(values) != count:
        raise ValueError(
            f"{name} has {len(values)} entries but {count_name} is {count}; give {count} values or a single int"
        )
    bad = [v for v in values if v < 1]
    if bad:
        raise ValueError(f"{name} must all be ≥ 1, got {bad[0]} in {values}")
    return values


def _check_shape(input_size: tuple[int, int, int], stages: int, pool: bool, kernel_size: int) -> None:
    """Reject sizes the pattern cannot tile exactly, naming the number at fault."""
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input_size must be (channels, height, width), all ≥ 1, got {input_size}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd and ≥ 1 so padding {kernel_size}//2 keeps the side, got {kernel_size}"
        )
    factor = 2**stages if pool else 1
    _, height, width = input_size
    if height % factor or width % factor:
        raise ValueError(
            f"with pool=True each of the {stages} stages halves the side, so height and width must be multiples of "
            f"{factor}; got {height}×{width} (resize the input, use fewer stages, or pool=False)"
        )


class GenericCNN(nn.Module):
    """The CS231n pattern, with every number a constructor argument."""

    def __init__(
        self,
        input_size: tuple[int, int, int],
        filters: list[int],
        convs_per_stage: int,
        kernel_size: int,
        pool: bool,
        fc_widths: list[int],
        num_classes: int,
    ) -> None:
        super().__init__()
        channels, height, width = input_size
        features: list[nn.Module] = []
        for stage_filters in filters:
            for _ in range(convs_per_stage):
                features += [nn.Conv2d(channels, stage_filters, kernel_size, padding=kernel_size // 2), nn.ReLU()]
                channels = stage_filters
            if pool:
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
                height, width = height // 2, width // 2
        self.features = nn.Sequential(*features)
        classifier: list[nn.Module] = [nn.Flatten()]
        fan_in = channels * height * width
        for fc_width in fc_widths:
            classifier += [nn.Linear(fan_in, fc_width), nn.ReLU()]
            fan_in = fc_width
        classifier.append(nn.Linear(fan_in, num_classes))
        self.classifier = nn.Sequential(*classifier)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def generic_cnn(
    *,
    input_size: tuple[int, int, int],
    num_classes: int,
    convs_per_stage: int,
    stages: int,
    filters: int | Sequence[int],
    fc_layers: int,
    fc_widths: int | Sequence[int],
    kernel_size: int = 3,
    pool: bool = True,
    width_mult: float = 1.0,
) -> GenericCNN:
    """Build INPUT → [[CONV → RELU]*N → POOL?]*M → [FC → RELU]*K → FC.

    Args:
        input_size: (channels, height, width) of one image.
        num_classes: outputs of the last FC.
        convs_per_stage: N ≥ 1, convs in each stage.
        stages: M ≥ 0, conv stages, each optionally closed by a 2×2/2 max pool.
        filters: filters of every conv in a stage, one int for all stages or one per stage.
        fc_layers: K ≥ 0, hidden FC layers.
        fc_widths: hidden FC widths, one int for all or one per hidden layer.
        kernel_size: odd conv kernel side; padding is kernel_size // 2.
        pool: whether each stage ends with a max pool.
        width_mult: scales filters and hidden FC widths (rounded, at least 1).

    Raises:
        ValueError: naming the argument and the number that cannot form the pattern.
    """
    _at_least("convs_per_stage (N)", convs_per_stage, 1)
    _at_least("stages (M)", stages, 0)
    _at_least("fc_layers (K)", fc_layers, 0)
    _at_least("num_classes", num_classes, 1)
    _check_shape(input_size, stages, pool, kernel_size)
    stage_filters = _per_layer("filters", filters, stages, "stages (M)")
    hidden = _per_layer("fc_widths", fc_widths, fc_layers, "fc_layers (K)")
    return GenericCNN(
        input_size=input_size,
        filters=[scaled(f, width_mult) for f in stage_filters],
        convs_per_stage=convs_per_stage,
        kernel_size=kernel_size,
        pool=pool,
        fc_widths=[scaled(w, width_mult) for w in hidden],
        num_classes=num_classes,
    )


def small_cnn(num_classes: int = 10, width_mult: float = 1.0) -> GenericCNN:
    """The zoo's CIFAR-size CNN: 3×32×32, two 3×3 convs per stage at 32/64/128 filters, FC 256 (814,122 params)."""
    return generic_cnn(
        input_size=(3, 32, 32),
        num_classes=num_classes,
        convs_per_stage=2,
        stages=3,
        filters=(32, 64, 128),
        fc_layers=1,
        fc_widths=256,
        width_mult=width_mult,
    )


def tiny_cnn(num_classes: int = 10, width_mult: float = 1.0) -> GenericCNN:
    """An overhead-bound CIFAR-size CNN: one 3×3 conv per stage at 16/32/64 filters, FC 128 (156,074 params).

    About 2.9 M multiply-accumulates per image, so on a CPU the model runs tens of thousands of images/s and
    the cost of serving it is the request path — the case the benchmarks use it for.
    """
    return generic_cnn(
        input_size=(3, 32, 32),
        num_classes=num_classes,
        convs_per_stage=1,
        stages=3,
        filters=(16, 32, 64),
        fc_layers=1,
        fc_widths=128,
        width_mult=width_mult,
    )
