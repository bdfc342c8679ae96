"""Train the default model: LeNet-5 on scikit-learn's digits, seeded, then export it through the pipeline.

Images go through torchvision's Resize → CenterCrop → ToTensor → Normalize — the transform the service
reproduces — so the served model sees at inference exactly what it saw in training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from tqdm import tqdm

from export import digits
from export.pipeline import ExportResult, ExportSpec, build
from export.zoo import get
from service.repository import DynamicBatching, Preprocessing

INPUT_SIZE = (1, 32, 32)
DEFAULT_NAME = "lenet5_digits"


def to_tensors(images: digits.Images, pre: Preprocessing) -> torch.Tensor:
    """Greyscale uint8 images through torchvision's evaluation transform: the reference the service matches."""
    transform = transforms.Compose(
        [
            transforms.Resize(pre.resize, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(pre.crop),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    return torch.stack([transform(Image.fromarray(img, mode="L")) for img in images])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def train_lenet(epochs: int = 30, seed: int = digits.SEED) -> tuple[nn.Module, Preprocessing, dict[str, float | int]]:
    """Train LeNet-5 on the digits' training split.

    Returns:
        The model, the preprocessing it was trained with, and the metrics for the export report.
    """
    torch.manual_seed(seed)
    x_train, y_train, x_hold, y_hold = digits.split()
    # Normalisation statistics of the training split, after resizing (what ToTensor sees).
    scaled = to_tensors(x_train, Preprocessing(resize=32, crop=(32, 32), color_mode="L", mean=(0.0,), std=(1.0,)))
    pre = Preprocessing(
        resize=32,
        crop=(32, 32),
        color_mode="L",
        mean=(round(float(scaled.mean()), 4),),
        std=(round(float(scaled.std()), 4),),
    )
    xt, yt = to_tensors(x_train, pre), torch.from_numpy(y_train)
    xh, yh = to_tensors(x_hold, pre), torch.from_numpy(y_hold)
    model = get("lenet5").factory(num_classes=10)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="training LeNet-5 on digits", unit="epoch"):
        model.train()
        for idx in torch.randperm(len(xt), generator=generator).split(64):
            optimiser.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            optimiser.step()
    metrics: dict[str, float | int] = {
        "train_accuracy": round(_accuracy(model, xt, yt), 4),
        "holdout_accuracy": round(_accuracy(model, xh, yh), 4),
        "train_size": len(xt),
        "holdout_size": len(xh),
        "epochs": epochs,
        "seed": seed,
    }
    return model, pre, metrics


def train_digits(out_dir: Path, name: str = DEFAULT_NAME, epochs: int = 30, version: str | None = None) -> ExportResult:
    """Train, then export through the full pipeline, recording the held-out accuracy in config.json."""
    model, pre, metrics = train_lenet(epochs=epochs)
    training = {
        "dataset": "sklearn.datasets.load_digits (8x8 upscaled to 32x32)",
        "holdout_fraction": digits.HOLDOUT_FRACTION,
        **metrics,
    }
    spec = ExportSpec(
        name=name,
        input_size=INPUT_SIZE,
        labels=tuple(str(i) for i in range(10)),
        version=version,
        max_batch_size=64,
        dynamic_batching=DynamicBatching(preferred_batch_size=(16, 32, 64)),
        preprocessing=pre,
        extra_report={"training": training, "holdout_accuracy": metrics["holdout_accuracy"]},
    )
    return build(model, spec, out_dir, architecture="lenet5")
