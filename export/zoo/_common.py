"""Building blocks shared by the zoo's architectures: width scaling, the AlexNet-style LRN, weight init.

Every factory takes ``width_mult`` so tests and CI can build the big nets narrow; ``scaled`` is the one rule for it.
"""

from __future__ import annotations

from torch import nn


def scaled(channels: int, width_mult: float) -> int:
    """Scale a published channel or hidden-FC width, rounding to the nearest integer and never below 1.

    Raises:
        ValueError: if ``width_mult`` is not positive (a zero-width layer cannot be built).
    """
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}; use 1.0 for the published widths")
    return max(1, round(channels * width_mult))


def krizhevsky_lrn() -> nn.LocalResponseNorm:
    """Local response normalisation with Krizhevsky et al.'s constants (n=5, alpha=1e-4, beta=0.75, k=2).

    AlexNet, ZFNet and VGG's A-LRN configuration (which cites AlexNet's setting) all use it.
    """
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def init_weights(model: nn.Module) -> None:
    """Initialise as torchvision does, so randomly initialised exports give non-degenerate outputs.

    PyTorch's default init shrinks activations layer after layer in deep nets without batch norm (VGG, AlexNet),
    which would leave near-identical logits and make the export's parity check meaningless.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
