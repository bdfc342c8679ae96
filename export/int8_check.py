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
    """FP32 against INT8 on the held-out inputs, as image counts: right answers where labels exist, and the images
    on which both models' top-1 agree. The gate compares the counts; the fractions are for reading."""

    size: int
    fp32_correct: int | None
    int8_correct: int | None
    agreeing: int

    @property
    def fp32_accuracy(self) -> float | None:
        """FP32's held-out accuracy (None without labels)."""
        return None if self.fp32_correct is None else self.fp32_correct / self.size

    @property
    def int8_accuracy(self) -> float | None:
        """INT8's held-out accuracy (None without labels)."""
        return None if self.int8_correct is None else self.int8_correct / self.size

    @property
    def agreement(self) -> float:
        """The share of held-out images on which INT8's top-1 is FP32's."""
        return self.agreeing / self.size


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
        fp32_correct=None if labels is None else int(np.sum(ref == labels)),
        int8_correct=None if labels is None else int(np.sum(ours == labels)),
        agreeing=int(np.sum(ref == ours)),
    )


def speed(
    fp32: ort.InferenceSession,
    int8: ort.InferenceSession,
    inputs: npt.NDArray[np.generic],
    max_batch: int,
    runs: int = SPEED_RUNS,
) -> dict[str, Any]:
    """Median ``session.run`` time of each model on the same batch, runs alternating (the order swapping each time)
    in one process, so a busy machine slows both alike; ``int8_speedup`` is FP32's median over INT8's.

    The batch is ``SPEED_BATCH`` rows of ``inputs`` (repeated if fewer), or ``max_batch`` if the model takes fewer.
    """
    rows = np.resize(inputs, (min(SPEED_BATCH, max_batch), *inputs.shape[1:]))
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
    # Counts, not fractions: a drop of exactly the bound (1 image of 100 at 0.01) passes instead of failing on float
    # rounding (0.97 - 0.96 = 0.010000000000000009); the epsilon absorbs the bound's own (0.29 * 100 = 28.999…).
    allowed = max_drop * result.size + 1e-9
    if result.fp32_correct is not None and result.int8_correct is not None:
        lost = result.fp32_correct - result.int8_correct
        drop = lost / result.size
        if lost > allowed:
            raise ExportError(
                "accuracy",
                f"INT8 held-out accuracy {result.int8_accuracy:.2%} vs FP32 {result.fp32_accuracy:.2%} on "
                f"{result.size} images: a drop of {drop:.2%}, more than --max-accuracy-drop {max_drop:g}; "
                "nothing written",
            )
        return {"measure": "accuracy drop", "value": drop, "max_accuracy_drop": max_drop}
    if result.size - result.agreeing > allowed:
        raise ExportError(
            "agreement",
            f"INT8 agrees with FP32's top-1 on {result.agreement:.2%} of {result.size} held-out images (no labels), "
            f"less than 1 - --max-accuracy-drop = {1 - max_drop:.2%}; nothing written",
        )
    return {"measure": "top-1 agreement (no labels)", "value": result.agreement, "max_accuracy_drop": max_drop}
