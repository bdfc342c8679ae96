"""ResNet-18/34/50/101/152 (He et al., 2016, Table 1), 224×224×3 input, torchvision's layout and parameter names.

conv1 7×7/2 p3 → 112×112×64, max pool 3×3/2 p1 → 56×56, then conv2_x..conv5_x (``layer1``..``layer4``) at 56/28/14/7
with 64/128/256/512 channels (basic blocks) or 256/512/1024/2048 (bottlenecks), global average pool, FC. Shortcuts
are identities, or 1×1 projections with batch norm where the shape changes (option B). Rounding="floor": conv1
((224 − 7 + 6)/2 + 1 = 112.5), the max pool (56.5) and every stride-2 conv and projection (28.5, 14.5, 7.5) rely
on PyTorch's floor. The stride sits on the bottleneck's 3×3 (torchvision's "v1.5"; same parameters and shapes).
Totals at 1000 classes: 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808.
"""

from __future__ import annotations

import torch
from torch import nn

from export.zoo._common import init_weights, scaled


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias (batch norm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution with no bias (batch norm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """Option B shortcut: a 1×1 projection where the block changes shape, None (identity) where it does not."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand ×4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem, four stages of residual blocks (the first of stages 2–4 halves the side), global pool, FC."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int,
        width_mult: float,
    ) -> None:
        super().__init__()
        self.in_channels = scaled(64, width_mult)
        self.conv1 = nn.Conv2d(3, self.in_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, scaled(64, width_mult), layers[0], stride=1)
        self.layer2 = self._make_layer(block, scaled(128, width_mult), layers[1], stride=2)
        self.layer3 = self._make_layer(block, scaled(256, width_mult), layers[2], stride=2)
        self.layer4 = self._make_layer(block, scaled(512, width_mult), layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.in_channels, num_classes)
        init_weights(self)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage (conv2_x..conv5_x): ``blocks`` blocks, the first one strided and, if needed, projected."""
        layers: list[nn.Module] = [block(self.in_channels, planes, stride)]
        self.in_channels = planes * block.expansion
        layers += [block(self.in_channels, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, width_mult: float = 1.0) -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2]."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, width_mult=width_mult)


def resnet34(num_classes: int = 1000, width_mult: float = 1.0) -> ResNet:
    """ResNet-34: basic blocks [3, 4, 6, 3]."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes=num_classes, width_mult=width_mult)


def resnet50(num_classes: int = 1000, width_mult: float = 1.0) -> ResNet:
    """ResNet-50: bottlenecks [3, 4, 6, 3]."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, width_mult=width_mult)


def resnet101(num_classes: int = 1000, width_mult: float = 1.0) -> ResNet:
    """ResNet-101: bottlenecks [3, 4, 23, 3]."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes=num_classes, width_mult=width_mult)


def resnet152(num_classes: int = 1000, width_mult: float = 1.0) -> ResNet:
    """ResNet-152: bottlenecks [3, 8, 36, 3]."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes=num_classes, width_mult=width_mult)
