"""``build --input-dtype uint8``: a graph that takes the decoded image's 0-255 pixels and normalises them itself.

A float32 input costs a client 4 bytes a pixel for values that were bytes when decoded; MLPerf and Triton
deployments feed GPUs uint8 instead and let the graph do torchvision's ``ToTensor`` (/255) and ``Normalize``
((x - mean) / std). Here the network is wrapped in exactly that, with the config's own mean and std, and the config
says ``"normalize": "graph"``, so the service sends resized, cropped pixels and keeps mean/std as the record of
what the graph folds. Parity then compares the uint8 graph with the float network on the same images normalised
the torchvision way, outside the graph, so a wrong fold fails the export.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from export.errors import ExportError
from export.validate import Feed
from service.preprocess import ImageTransform
from service.repository import Preprocessing

#: ``--input-dtype`` → config.json's ``data_type`` of the input.
INPUT_DTYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8"}


class FoldedNormalisation(nn.Module):
    """uint8 NCHW pixels → float → ``x * scale + bias`` per channel → the network.

    ``scale`` and ``bias`` are the service's own (``service.preprocess.ImageTransform``): ``(x / 255 - mean) / std``
    as one multiply-add, so the graph normalises exactly as the service's float path would. Inverting is not folded:
    the service inverts the pixels themselves (``255 - x``) before a graph that normalises.
    """

    scale: torch.Tensor  # (1, C, 1, 1) buffers: they travel with the module and export as graph constants
    bias: torch.Tensor

    def __init__(self, network: nn.Module, pre: Preprocessing) -> None:
        super().__init__()
        transform = ImageTransform.from_config(replace(pre, invert=False))
        self.network = network
        self.register_buffer("scale", torch.from_numpy(transform.scale).unsqueeze(0))
        self.register_buffer("bias", torch.from_numpy(transform.bias).unsqueeze(0))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise the pixels and run the network on them."""
        return self.network(pixels.to(torch.float32) * self.scale + self.bias)


@dataclass(frozen=True)
class GraphInput:
    """What the exported graph takes: float32 tensors the caller normalised, or uint8 pixels it normalises."""

    dtype: str  # a key of INPUT_DTYPES
    preprocessing: Preprocessing  # with normalize "graph" when dtype is uint8

    @classmethod
    def of(cls, dtype: str, preprocessing: Preprocessing) -> GraphInput:
        """The input form for ``--input-dtype dtype``, with the preprocessing the config will record.

        Raises:
            ExportError: ``input-dtype`` for a type the export cannot fold the normalisation for.
        """
        if dtype not in INPUT_DTYPES:
            raise ExportError("input-dtype", f"input dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
        pixels = dtype == "uint8"
        return cls(dtype, replace(preprocessing, normalize="graph" if pixels else "service"))

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype the graph is traced with."""
        return torch.uint8 if self.dtype == "uint8" else torch.float32

    def exported(self, network: nn.Module) -> nn.Module:
        """The module to export: the network itself, or the network behind the folded normalisation."""
        return FoldedNormalisation(network, self.preprocessing).eval() if self.dtype == "uint8" else network

    def feed(self) -> Feed | None:
        """The parity inputs for a uint8 graph (None: the parity check's own float inputs)."""
        return pixel_feed(self.preprocessing) if self.dtype == "uint8" else None


def pixel_feed(pre: Preprocessing) -> Feed:
    """Random uint8 images for ONNX Runtime and, for PyTorch, the same images as torchvision normalises them.

    The reference is computed independently of the fold (``ToTensor`` then ``Normalize``, in float64), so a fold
    that disagrees with the config fails parity.
    """
    shape = (1, len(pre.mean), 1, 1)
    mean = torch.tensor(pre.mean, dtype=torch.float64).reshape(shape)
    std = torch.tensor(pre.std, dtype=torch.float64).reshape(shape)

    def feed(generator: torch.Generator, shape: tuple[int, ...]) -> tuple[torch.Tensor, npt.NDArray[np.uint8]]:
        pixels = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        normalised = ((pixels.double() / 255.0 - mean) / std).float()  # ToTensor → Normalize, in float64
        return normalised, pixels.numpy()

    return feed
