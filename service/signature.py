"""A served model's input/output signature, indexed once so per-request checks are dictionary lookups."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.datatypes import V2_TO_NUMPY
from service.repository import ModelConfig


@dataclass(frozen=True)
class InputSpec:
    """One input: its v2 datatype, numpy dtype, dims without the batch axis, and elements per row."""

    datatype: str
    dtype: np.dtype[Any]
    dims: tuple[int, ...]
    row_elements: int


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs, indexed once for fast request checks."""

    model: str
    max_batch_size: int
    inputs: dict[str, InputSpec]
    outputs: tuple[str, ...]

    @classmethod
    def from_config(cls, config: ModelConfig) -> Signature:
        """Index a repository config."""
        inputs = {
            t.name: InputSpec(t.datatype, V2_TO_NUMPY[t.datatype], t.dims, math.prod(t.dims)) for t in config.input
        }
        return cls(config.name, config.max_batch_size, inputs, tuple(t.name for t in config.output))

    def expected_shape(self, name: str) -> str:
        """``[N, 1, 32, 32] with 1 <= N <= 64``: the shape an input must have, for error messages."""
        dims = ", ".join(str(d) for d in self.inputs[name].dims)
        return f"[N, {dims}] with 1 <= N <= {self.max_batch_size}"
