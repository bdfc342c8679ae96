"""What an INT8 model kept against its FP32 original: held-out accuracy and top-1 agreement, speed, and the gate.

Shared by ``python -m export quantize`` (export/quantize.py) and the bench (bench/int8.py), so both measure alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from export.calibration import CalibrationSet
from export.errors import ExportError

#: The speed comparison: rows per run, and timed runs of each model (alternating, after one warm-up each).
SPEED_BATCH = 8
SPEED_RUNS = 20


@dataclass(frozen=True)
class Comparison:
    """FP32 against INT8 on the held-out inputs: accuracy where labels exist, and top-1 agreement always."""

    size: int
    fp32_accuracy: float | None
    int8_accuracy: float | None
    agreement: float


def _top1(session: ort.InferenceSession, inputs: npt.NDArray[np.generic], batch: int) -> npt.NDArray[np.intp]:
    name = session.get_inputs()[0].name
    chunks = [session.run(None, {name: inputs[i : i + batch]})[0].argmax(axis=1) for i in range(0, len(inputs), batch)]
    return np.concatenate(chunks)


def compare(
    fp32: ort.InferenceSession,
    int8: ort.InferenceSession,
    images: CalibrationSet,
    batch: int,
) -> Comparison:
    """Both models' top-1 on the held-out inputs, against the labels (if any) and against each other."""
    ref, ours = _top1(fp32, images.holdout, batch), _top1(int8, images.holdout, batch)
    labels = images.holdout_labels
    return Comparison(
        size=len(ref),
        fp32_accuracy=None if labels is None else float(np.mean(ref == labels)),
        int8_accuracy=None if labels is None else float(np.mean(ours == labels)),
        agreement=float(np.mean(ref == ours)),
    )


def speed(
    fp32: ort.InferenceSession, int8: ort.InferenceSession, rows: npt.NDArray[np.generic], runs: int = SPEED_RUNS
) -> dict[str, Any]:
    """Median ``session.run`` time of each model on the same batch, runs alternating (the order swapping each time)
    in one process, so a busy machine slows both alike; ``int8_speedup`` is FP32's median over INT8's."""
    name = fp32.get_inputs()[0].name
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    sessions = {"fp32": fp32, "int8": int8}
    for session in sessions.values():
        session.run(None, {name: rows})  # warm-up: first runs allocate
    for i in range(runs):
        for key in ("fp32", "int8") if i % 2 == 0 else ("int8", "fp32"):
            started = time.perf_counter()
            sessions[key].run(None, {name: rows})
            times[key].append(time.perf_counter() - started)
    fp32_ms, int8_ms = (statistics.median(times[k]) * 1e3 for k in ("fp32", "int8"))
    return {
        "batch": len(rows),
        "runs": runs,
        "fp32_median_ms": fp32_ms,
        "int8_median_ms": int8_ms,
        "int8_speedup": fp32_ms / int8_ms,
    }


def gate(result: Comparison, max_drop: float) -> dict[str, Any]:
    """Refuse an INT8 model that lost more than ``max_drop``; returns what the report records of the gate.

    Raises:
        ExportError: ``accuracy`` with both accuracies, or ``agreement`` where there are no labels.
    """
    # The figures are counts over result.size: compare the counts, so a drop of exactly the bound (1 image of 100
    # at 0.01) passes instead of failing on float rounding (0.97 - 0.96 = 0.010000000000000009).
    allowed = max_drop * result.size + 1e-9
    if result.fp32_accuracy is not None and result.int8_accuracy is not None:
        lost = round((result.fp32_accuracy - result.int8_accuracy) * result.size)
        drop = lost / result.size
        if lost > allowed:
            raise ExportError(
                "accuracy",
                f"INT8 held-out accuracy {result.int8_accuracy:.2%} vs FP32 {result.fp32_accuracy:.2%} on "
                f"{result.size} images: a drop of {drop:.2%}, more than --max-accuracy-drop {max_drop:g}; "
                "nothing written",
            )
        return {"measure": "accuracy drop", "value": drop, "max_accuracy_drop": max_drop}
    if round((1 - result.agreement) * result.size) > allowed:
        raise ExportError(
            "agreement",
            f"INT8 agrees with FP32's top-1 on {result.agreement:.2%} of {result.size} held-out images (no labels), "
            f"less than 1 - --max-accuracy-drop = {1 - max_drop:.2%}; nothing written",
        )
    return {"measure": "top-1 agreement (no labels)", "value": result.agreement, "max_accuracy_drop": max_drop}
