"""GoogLeNet (Szegedy et al., 2015, Table 1 and Figure 3) at inference: no auxiliary classifiers, 224×224×3 input.

conv1 7×7/2 p3 → 112×112×64 (223/2 + 1 = 112.5, floored), max pool 3×3/2 → 56×56×64, LRN, conv2 1×1 64 then 3×3 192
→ 56×56×192, LRN, max pool → 28×28×192, inception 3a 28×28×256, 3b 28×28×480, max pool → 14×14×480, 4a 512, 4b 512,
4c 512, 4d 528, 4e 832, max pool → 7×7×832, 5a 7×7×832, 5b 7×7×1024, avg pool 7×7/1 → 1×1×1024, dropout 40%, linear.
The 3×3/2 max pools round up (ceil_mode, as Caffe's reference model: 112 → 56, 56 → 28, 28 → 14, 14 → 7), and conv1
floors, so rounding="floor". Convs carry biases and no batch norm, and the 5×5 branch is really 5×5, as published:
6,998,552 parameters at 1000 classes, 2.9% above Table 1's 6.8M: that column disagrees with the table's own filter
counts (conv1 is listed at 2.7K, yet 7·7·3·64 = 9,408 weights), so no faithful build can hit it exactly.
torchvision's googlenet (6,624,904 without aux heads) is a different net: batch norm, 3×3 in place of 5×5.
"""

from __future__ import annotations

import torch
from torch import nn

from export.zoo._common import init_weights, scaled

# Table 1 per module: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj.
_INCEPTION_TABLE: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _conv_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    """Every convolution in GoogLeNet, including the reductions and projections, is followed by a ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding), nn.ReLU(inplace=True))


def _max_pool() -> nn.MaxPool2d:
    """The 3×3/2 max pool between stages, rounding up as the Caffe reference model does."""
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


def _lrn() -> nn.LocalResponseNorm:
    """LRN of Figure 3; the paper gives no constants, these are the Caffe reference model's (k=1)."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


class Inception(nn.Module):
    """Four parallel branches (1×1; 1×1 → 3×3; 1×1 → 5×5; 3×3 max pool → 1×1) concatenated along channels."""

    def __init__(self, in_channels: int, row: tuple[int, int, int, int, int, int], width_mult: float) -> None:
        super().__init__()
        ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj = (scaled(c, width_mult) for c in row)
        self.branch1 = _conv_relu(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(_conv_relu(in_channels, ch3x3red, 1), _conv_relu(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(_conv_relu(in_channels, ch5x5red, 1), _conv_relu(ch5x5red, ch5x5, 5, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv_relu(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class GoogLeNet(nn.Module):
    """The 22-layer Inception network of Table 1, inference path only."""

    def __init__(self, num_classes: int, width_mult: float) -> None:
        super().__init__()
        c64, c192 = scaled(64, width_mult), scaled(192, width_mult)
        self.conv1 = _conv_relu(3, c64, 7, stride=2, padding=3)
        self.maxpool1 = _max_pool()
        self.norm1 = _lrn()
        self.conv2_reduce = _conv_relu(c64, c64, 1)
        self.conv2 = _conv_relu(c64, c192, 3, padding=1)
        self.norm2 = _lrn()
        self.maxpool2 = _max_pool()
        self.inception3a = Inception(c192, _INCEPTION_TABLE["3a"], width_mult)
        self.inception3b = Inception(self.inception3a.out_channels, _INCEPTION_TABLE["3b"], width_mult)
        self.maxpool3 = _max_pool()
        self.inception4a = Inception(self.inception3b.out_channels, _INCEPTION_TABLE["4a"], width_mult)
        self.inception4b = Inception(self.inception4a.out_channels, _INCEPTION_TABLE["4b"], width_mult)
        self.inception4c = Inception(self.inception4b.out_channels, _INCEPTION_TABLE["4c"], width_mult)
        self.inception4d = Inception(self.inception4c.out_channels, _INCEPTION_TABLE["4d"], width_mult)
        self.inception4e = Inception(self.inception4d.out_channels, _INCEPTION_TABLE["4e"], width_mult)
        self.maxpool4 = _max_pool()
        self.inception5a = Inception(self.inception4e.out_channels, _INCEPTION_TABLE["5a"], width_mult)
        self.inception5b = Inception(self.inception5a.out_channels, _INCEPTION_TABLE["5b"], width_mult)
        self.avgpool = nn.AvgPool2d(kernel_size=7, stride=1)
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(self.inception5b.out_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.maxpool1(self.conv1(x)))
        x = self.maxpool2(self.norm2(self.conv2(self.conv2_reduce(x))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4c(self.inception4b(self.inception4a(x)))
        x = self.maxpool4(self.inception4e(self.inception4d(x)))
        x = self.inception5b(self.inception5a(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def googlenet(num_classes: int = 1000, width_mult: float = 1.0) -> GoogLeNet:
    """GoogLeNet without auxiliary classifiers, for a 224×224×3 input."""
    return GoogLeNet(num_classes=num_classes, width_mult=width_mult)
