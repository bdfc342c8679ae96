"""LeNet-5 (LeCun et al., 1998), the layer table of the paper with full C3 connectivity.

32×32×1 → C1 conv5 ×6 → 28×28×6 → S2 avgpool2 → 14×14×6 → C3 conv5 ×16 → 10×10×16 → S4 avgpool2 → 5×5×16
→ C5 conv5 ×120 → 1×1×120 → F6 84 → output. 61,706 parameters at 10 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from export.zoo._common import scaled


class LeNet5(nn.Module):
    """The classic digit recogniser; tanh activations and average pooling as published."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        c1, c3, c5, f6 = (scaled(c, width_mult) for c in (6, 16, 120, 84))
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=5),  # C1
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),  # S2
            nn.Conv2d(c1, c3, kernel_size=5),  # C3
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),  # S4
            nn.Conv2d(c3, c5, kernel_size=5),  # C5
            nn.Tanh(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c5, f6), nn.Tanh(), nn.Linear(f6, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def lenet5(num_classes: int = 10, width_mult: float = 1.0) -> LeNet5:
    """Build LeNet-5 for ``num_classes`` outputs."""
    return LeNet5(num_classes=num_classes, width_mult=width_mult)
