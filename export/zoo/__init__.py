"""The architecture zoo: classic CNNs rebuilt from their published layer tables, looked up by name.

Each entry knows its standard input size, its published parameter count, and whether the published design
relies on rounding (floor/ceil) in the convolution arithmetic, so the strict shape check knows what to expect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from export.zoo.alexnet import alexnet, zfnet
from export.zoo.generic import small_cnn, tiny_cnn
from export.zoo.googlenet import googlenet
from export.zoo.lenet import lenet5
from export.zoo.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from export.zoo.vgg import vgg_a, vgg_a_lrn, vgg_b, vgg_c, vgg_d, vgg_e


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to build it and what the literature says it should look like."""

    name: str
    factory: Callable[..., nn.Module]  # factory(num_classes=..., width_mult=...) -> nn.Module
    input_size: tuple[int, int, int]  # (channels, height, width)
    num_classes: int
    published_params: int | None  # at num_classes, width_mult=1.0; None where no figure is published
    rounding: str  # "strict": every layer tiles its input exactly; "floor": it relies on rounding (floor or ceil_mode)
    description: str


# Exact figures are torchvision's counts or this zoo's own arithmetic on a published table; where only the paper's
# rounded figure exists the description says so. Each module's docstring lists the layers that round.
_ENTRIES = (
    ZooEntry(
        name="lenet5",
        factory=lenet5,
        input_size=(1, 32, 32),
        num_classes=10,
        published_params=61_706,
        rounding="strict",
        description="LeNet-5 (LeCun et al., 1998): C1-S2-C3-S4-C5-F6-output, tanh, average pooling",
    ),
    ZooEntry(
        name="alexnet",
        factory=alexnet,
        input_size=(3, 227, 227),
        num_classes=1000,
        published_params=62_378_344,
        rounding="strict",
        description="AlexNet (Krizhevsky et al., 2012), single tower as CS231n draws it: 5 conv + 3 FC, LRN after "
        "POOL1/POOL2; exact count of this layout (the paper's '60 million' is the two-GPU grouped version)",
    ),
    ZooEntry(
        name="zfnet",
        factory=zfnet,
        input_size=(3, 227, 227),
        num_classes=1000,
        published_params=None,
        rounding="strict",
        description="ZFNet (Zeiler & Fergus, 2013): AlexNet with CONV1 7x7/2, CONV2 5x5/2 and CS231n's 512/1024/512 "
        "CONV3-5, 227 input so every layer tiles exactly; no parameter count is published (this build: 107,627,624)",
    ),
    *(
        ZooEntry(
            name=name,
            factory=factory,
            input_size=(3, 224, 224),
            num_classes=1000,
            published_params=params,
            rounding="strict",
            description=f"VGG configuration {config} (Simonyan & Zisserman, 2015, Table 1), no batch norm; {source}",
        )
        for name, factory, config, params, source in (
            ("vgg_a", vgg_a, "A (VGG-11)", 132_863_336, "exact count, as torchvision's vgg11"),
            ("vgg_a_lrn", vgg_a_lrn, "A-LRN", 133_000_000, "the paper's rounded 133M (Table 2); LRN adds none to A"),
            ("vgg_b", vgg_b, "B (VGG-13)", 133_047_848, "exact count, as torchvision's vgg13"),
            ("vgg_c", vgg_c, "C (1x1 convs)", 134_000_000, "the paper's rounded 134M (Table 2); built: 133,638,952"),
            ("vgg_d", vgg_d, "D (VGG-16)", 138_357_544, "exact count, as torchvision's vgg16"),
            ("vgg_e", vgg_e, "E (VGG-19)", 143_667_240, "exact count, as torchvision's vgg19"),
        )
    ),
    ZooEntry(
        name="googlenet",
        factory=googlenet,
        input_size=(3, 224, 224),
        num_classes=1000,
        published_params=6_800_000,
        rounding="floor",
        description="GoogLeNet (Szegedy et al., 2015) without auxiliary classifiers, 5x5 branches and biases as "
        "published; the paper's rounded 6.8M (Table 1), which its own filter counts do not reproduce: this build "
        "has 6,998,552 (+2.9%)",
    ),
    *(
        ZooEntry(
            name=f"resnet{depth}",
            factory=factory,
            input_size=(3, 224, 224),
            num_classes=1000,
            published_params=params,
            rounding="floor",
            description=f"ResNet-{depth} (He et al., 2016), {block} blocks, projection shortcuts (option B), "
            f"torchvision's layout and exact count",
        )
        for depth, factory, block, params in (
            (18, resnet18, "basic", 11_689_512),
            (34, resnet34, "basic", 21_797_672),
            (50, resnet50, "bottleneck", 25_557_032),
            (101, resnet101, "bottleneck", 44_549_160),
            (152, resnet152, "bottleneck", 60_192_808),
        )
    ),
    ZooEntry(
        name="small_cnn",
        factory=small_cnn,
        input_size=(3, 32, 32),
        num_classes=10,
        published_params=None,
        rounding="strict",
        description="CIFAR-size CNN from the generic builder: [[CONV3-RELU]x2 -> POOL]x3 at 32/64/128, FC 256, FC 10; "
        "not a published design (814,122 parameters, 39 M MACs): compute-bound on a CPU",
    ),
    ZooEntry(
        name="tiny_cnn",
        factory=tiny_cnn,
        input_size=(3, 32, 32),
        num_classes=10,
        published_params=None,
        rounding="strict",
        description="CIFAR-size CNN from the generic builder: [[CONV3-RELU]x1 -> POOL]x3 at 16/32/64, FC 128, FC 10; "
        "not a published design (156,074 parameters, 2.9 M MACs): the benchmarks' overhead-bound model",
    ),
)
ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}
# Torchvision's names for the VGG configurations; resolved by ``get`` so iterating ZOO yields each net once.
ALIASES: dict[str, str] = {"vgg11": "vgg_a", "vgg13": "vgg_b", "vgg16": "vgg_d", "vgg19": "vgg_e"}


def get(name: str) -> ZooEntry:
    """Look up an architecture by name or alias (``vgg16`` is ``vgg_d``).

    Raises:
        KeyError: with the list of known names.
    """
    try:
        return ZOO[ALIASES.get(name, name)]
    except KeyError:
        known = ", ".join(sorted([*ZOO, *ALIASES]))
        raise KeyError(f"unknown architecture {name!r}; known: {known}") from None
