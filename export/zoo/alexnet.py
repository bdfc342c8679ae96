"""AlexNet (single-tower, as CS231n draws it) and ZFNet, one layout with two tables of numbers.

AlexNet, 227×227×3 input (every layer tiles exactly, rounding="strict"):
  CONV1 96 11×11/4 p0 → 55×55×96, POOL1 3×3/2 → 27×27×96, NORM1, CONV2 256 5×5/1 p2 → 27×27×256,
  POOL2 3×3/2 → 13×13×256, NORM2, CONV3 384 3×3/1 p1, CONV4 384 3×3/1 p1, CONV5 256 3×3/1 p1 → 13×13×256,
  POOL3 3×3/2 → 6×6×256, FC6 4096, FC7 4096, FC8 1000 — 62,378,344 parameters (the paper's "60 million" is
  the two-GPU version with grouped CONV2/4/5).

ZFNet, 227×227×3 input (rounding="strict"): the ZF paper's layout (CONV1 7×7/2, CONV2 5×5/2) with CS231n's
512/1024/512 filters in CONV3–5. The paper's 224 input cannot be tiled by a 7×7/2 window (224 − 7 is odd) and its
110/26 volumes rely on Caffe's rounding, so AlexNet's 227 input and CONV2 padding 1 are used instead; the pooled
volumes match the paper's (55, 13, 6), CONV1 and CONV2 come out one larger (111, 27):
  CONV1 96 7×7/2 p0 → 111×111×96, POOL1 3×3/2 → 55×55×96, NORM1, CONV2 256 5×5/2 p1 → 27×27×256,
  POOL2 3×3/2 → 13×13×256, NORM2, CONV3 512 3×3/1 p1 → 13×13×512, CONV4 1024 → 13×13×1024,
  CONV5 512 → 13×13×512, POOL3 3×3/2 → 6×6×512, FC6 4096, FC7 4096, FC8 1000 — 107,627,624 parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from export.zoo._common import init_weights, krizhevsky_lrn, scaled

_POOLED_SIZE = 6  # POOL3's output side for a 227×227 input, in both tables
_FC_WIDTH = 4096


class ConvSpec(NamedTuple):
    """One row of the layer table: filters, square kernel side, stride, zero padding."""

    filters: int
    kernel: int
    stride: int
    padding: int


ALEXNET_CONVS = (ConvSpec(96, 11, 4, 0), ConvSpec(256, 5, 1, 2), *[ConvSpec(n, 3, 1, 1) for n in (384, 384, 256)])
ZFNET_CONVS = (ConvSpec(96, 7, 2, 0), ConvSpec(256, 5, 2, 1), *[ConvSpec(n, 3, 1, 1) for n in (512, 1024, 512)])


def _max_pool() -> nn.MaxPool2d:
    """The overlapping 3×3 stride-2 max pool of the AlexNet paper."""
    return nn.MaxPool2d(kernel_size=3, stride=2)


class AlexNet(nn.Module):
    """CONV1-POOL1-NORM1-CONV2-POOL2-NORM2-CONV3-CONV4-CONV5-POOL3-FC6-FC7-FC8, numbers from a five-row table."""

    def __init__(self, convs: tuple[ConvSpec, ...], num_classes: int, width_mult: float) -> None:
        super().__init__()
        widths = [scaled(spec.filters, width_mult) for spec in convs]
        c1, c2, c3, c4, c5 = (
            nn.Conv2d(c_in, c_out, spec.kernel, spec.stride, spec.padding)
            for c_in, c_out, spec in zip([3, *widths[:-1]], widths, convs, strict=True)
        )
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", c1), ("relu1", nn.ReLU(inplace=True)),
                    ("pool1", _max_pool()), ("norm1", krizhevsky_lrn()),
                    ("conv2", c2), ("relu2", nn.ReLU(inplace=True)),
                    ("pool2", _max_pool()), ("norm2", krizhevsky_lrn()),
                    ("conv3", c3), ("relu3", nn.ReLU(inplace=True)),
                    ("conv4", c4), ("relu4", nn.ReLU(inplace=True)),
                    ("conv5", c5), ("relu5", nn.ReLU(inplace=True)), ("pool3", _max_pool()),
                ]
            )
        )  # fmt: skip
        fc = scaled(_FC_WIDTH, width_mult)
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc6", nn.Linear(widths[-1] * _POOLED_SIZE * _POOLED_SIZE, fc)),
                    ("relu6", nn.ReLU(inplace=True)), ("drop6", nn.Dropout(0.5)),
                    ("fc7", nn.Linear(fc, fc)), ("relu7", nn.ReLU(inplace=True)), ("drop7", nn.Dropout(0.5)),
                    ("fc8", nn.Linear(fc, num_classes)),
                ]
            )
        )  # fmt: skip
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def alexnet(num_classes: int = 1000, width_mult: float = 1.0) -> AlexNet:
    """AlexNet, single tower, for a 227×227×3 input."""
    return AlexNet(ALEXNET_CONVS, num_classes=num_classes, width_mult=width_mult)


def zfnet(num_classes: int = 1000, width_mult: float = 1.0) -> AlexNet:
    """ZFNet (Zeiler & Fergus, 2013) with CS231n's 512/1024/512 CONV3–5, for a 227×227×3 input."""
    return AlexNet(ZFNET_CONVS, num_classes=num_classes, width_mult=width_mult)
