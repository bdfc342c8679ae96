"""The architecture zoo: classic CNNs rebuilt from their published layer tables, looked up by name.

Each entry knows its standard input size, its published parameter count, and whether the published design
relies on rounding (floor/ceil) in the convolution arithmetic, so the strict shape check knows what to expect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from export.zoo.lenet import lenet5


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to build it and what the literature says it should look like."""

    name: str
    factory: Callable[..., nn.Module]  # factory(num_classes=..., width_mult=...) -> nn.Module
    input_size: tuple[int, int, int]  # (channels, height, width)
    num_classes: int
    published_params: int | None  # at num_classes, width_mult=1.0; None where no figure is published
    rounding: str  # "strict": every layer tiles its input exactly; "floor": the design relies on PyTorch's floor
    description: str


ZOO: dict[str, ZooEntry] = {
    "lenet5": ZooEntry(
        name="lenet5",
        factory=lenet5,
        input_size=(1, 32, 32),
        num_classes=10,
        published_params=61_706,
        rounding="strict",
        description="LeNet-5 (LeCun et al., 1998): C1-S2-C3-S4-C5-F6-output, tanh, average pooling",
    ),
}


def get(name: str) -> ZooEntry:
    """Look up an architecture by name.

    Raises:
        KeyError: with the list of known names.
    """
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ZOO))}") from None
