"""Validation of an exported graph: it loads in ONNX Runtime, and it computes what PyTorch computes.

Parity is checked at batch 1 and at several larger batch sizes on seeded random inputs. The tolerance applies to
the largest absolute difference divided by the largest output magnitude (at least 1): trained classifiers have
logits of order 10, but untrained deep nets (ResNet-152 at random init) reach 1e4, where float32 rounding alone
exceeds any fixed absolute bound. Output shapes must equal the arithmetic's prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export.errors import ExportError

PARITY_BATCH_SIZES = (1, 2, 5, 8)
DEFAULT_TOLERANCE = 1e-4
#: Draws one parity batch of a shape: what PyTorch gets and what ONNX Runtime gets. By default the same random floats;
#: a graph that normalises uint8 pixels itself gets the pixels, PyTorch their normalised values (export.uint8_input).
Feed = Callable[[torch.Generator, tuple[int, ...]], tuple[torch.Tensor, npt.NDArray[Any]]]


def _gaussian(generator: torch.Generator, shape: tuple[int, ...]) -> tuple[torch.Tensor, npt.NDArray[Any]]:
    x = torch.randn(shape, generator=generator)
    return x, x.numpy()


@dataclass(frozen=True)
class ParityResult:
    """The outcome of the ORT-vs-PyTorch comparison."""

    batch_sizes: tuple[int, ...]
    max_abs_error: float
    max_output_magnitude: float
    tolerance: float
    onnxruntime_version: str


def load_session(path: Path) -> ort.InferenceSession:
    """Open the graph on the CPU provider, translating load failures (e.g. a too-new IR version).

    Raises:
        ExportError: naming the IR version and the onnxruntime release when the graph will not load.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/… types
        ir = onnx.load(str(path), load_external_data=False).ir_version
        raise ExportError(
            "onnxruntime-load",
            f"onnxruntime {ort.__version__} cannot load the graph (IR version {ir}): {err}. "
            "Pin onnx and onnxruntime releases that agree on the IR version.",
        ) from err


def check_parity(
    model: nn.Module,
    session: ort.InferenceSession,
    input_size: tuple[int, ...],
    expected_output: tuple[int, ...],
    *,
    batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES,
    tolerance: float = DEFAULT_TOLERANCE,
    feed: Feed | None = None,
) -> ParityResult:
    """Compare ONNX Runtime with PyTorch on the same seeded inputs.

    Args:
        expected_output: the output shape (without batch) the shape analysis predicted.
        feed: the inputs, when the graph takes other than the floats ``model`` takes (default: the same floats).

    Raises:
        ExportError: ``output-shape`` when ORT's output shape differs from the prediction, ``parity`` when
            the largest absolute difference exceeds ``tolerance``.
    """
    model.eval()
    input_name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    magnitude = 1.0
    for batch in batch_sizes:
        x, graph_x = (feed or _gaussian)(generator, (batch, *input_size))
        with torch.no_grad():
            expected = model(x).numpy()
        actual = session.run(None, {input_name: graph_x})[0]
        if tuple(actual.shape) != (batch, *expected_output):
            raise ExportError(
                "output-shape",
                f"at batch {batch} ONNX Runtime produced shape {list(actual.shape)}, "
                f"the arithmetic predicted {[batch, *expected_output]}",
            )
        worst = max(worst, float(np.max(np.abs(actual - expected))))
        magnitude = max(magnitude, float(np.max(np.abs(expected))))
        if worst / magnitude > tolerance:
            raise ExportError(
                "parity",
                f"at batch {batch} ONNX Runtime and PyTorch differ by {worst:.3g} (max abs) on outputs up to "
                f"{magnitude:.3g}: {worst / magnitude:.3g} relative, tolerance {tolerance:g}",
            )
    return ParityResult(tuple(batch_sizes), worst, magnitude, tolerance, ort.__version__)
