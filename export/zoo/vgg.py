"""VGG configurations A, A-LRN, B, C, D, E (Simonyan & Zisserman, 2015, Table 1), 224×224×3 input.

3×3 convs with padding 1 keep the side; 2×2/2 max pools halve it: 224 → 112 → 56 → 28 → 14 → 7, all exact
(rounding="strict"). Configuration C ends blocks 3–5 with a 1×1 conv (padding 0); A-LRN puts Krizhevsky's LRN
after the first conv. Layer indices match torchvision's ``vgg11/13/16/19`` (no batch norm), so its state dicts load.
Totals at 1000 classes: A and A-LRN 132,863,336; B 133,047,848; C 133,638,952; D 138,357,544; E 143,667,240.
"""

from __future__ import annotations

import torch
from torch import nn

from export.zoo._common import init_weights, krizhevsky_lrn, scaled

# An int n is conv3-n, (n, 1) is conv1-n, "M" a 2×2/2 max pool, "LRN" local response normalisation.
_Layer = int | tuple[int, int] | str
_CONFIGS: dict[str, list[_Layer]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M", 512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
_POOLED_SIZE = 7  # 224 halved by five pools
_FC_WIDTH = 4096


def _features(config: list[_Layer], width_mult: float) -> tuple[nn.Sequential, int]:
    """The convolutional part of one configuration, and the channel count it ends with."""
    layers: list[nn.Module] = []
    channels = 3
    for layer in config:
        if isinstance(layer, str):
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2) if layer == "M" else krizhevsky_lrn())
            continue
        filters, kernel = layer if isinstance(layer, tuple) else (layer, 3)
        out = scaled(filters, width_mult)
        layers += [nn.Conv2d(channels, out, kernel_size=kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers), channels


class VGG(nn.Module):
    """A stack of conv3 (or conv1) layers with max pools, then FC-4096, FC-4096, FC-classes with dropout."""

    def __init__(self, config: str, num_classes: int, width_mult: float) -> None:
        super().__init__()
        self.features, channels = _features(_CONFIGS[config], width_mult)
        fc = scaled(_FC_WIDTH, width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(channels * _POOLED_SIZE * _POOLED_SIZE, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(fc, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg_a(num_classes: int = 1000, width_mult: float = 1.0) -> VGG:
    """VGG configuration A (VGG-11): 8 conv + 3 FC layers."""
    return VGG("A", num_classes=num_classes, width_mult=width_mult)


def vgg_a_lrn(num_classes: int = 1000, width_mult: float = 1.0) -> VGG:
    """VGG configuration A-LRN: A with local response normalisation after the first conv."""
    return VGG("A-LRN", num_classes=num_classes, width_mult=width_mult)


def vgg_b(num_classes: int = 1000, width_mult: float = 1.0) -> VGG:
    """VGG configuration B (VGG-13): 10 conv + 3 FC layers."""
    return VGG("B", num_classes=num_classes, width_mult=width_mult)


def vgg_c(num_classes: int = 1000, width_mult: float = 1.0) -> VGG:
    """VGG configuration C: B plus a 1×1 conv closing blocks 3, 4 and 5 (16 weight layers)."""
    return VGG("C", num_classes=num_classes, width_mult=width_mult)


def vgg_d(num_classes: int = 1000, width_mult: float = 1.0) -> VGG:
    """VGG configuration D (VGG-16): 13 conv + 3 FC layers."""
    return VGG("D", num_classes=num_classes, width_mult=width_mult)


def vgg_e(num_classes: int = 1000, width_mult: float = 1.0) -> VGG:
    """VGG configuration E (VGG-19): 16 conv + 3 FC layers."""
    return VGG("E", num_classes=num_classes, width_mult=width_mult)
