"""What KServe v2 asks of a request's tensors and options, whichever wire carries them: HTTP JSON, HTTP binary, gRPC.

Each protocol's codec (``service.api.v2_codec``, ``service.grpc_api.tensors``) reads its own encoding and calls these
checks, so both protocols accept the same requests and refuse the same mistakes with the same words. The top-k
classification output and the BYTES tensor layout are shared the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.api.client_numbers import MAX_TIMEOUT_US
from service.datatypes import NUMPY_TO_V2
from service.errors import BadRequest
from service.signature import InputSpec, Signature

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class RequestedOutput:
    """One output the client asked for, and how: binary or JSON, raw tensor or top-``classification``."""

    name: str
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    """A parsed v2 infer request: named input arrays with a shared batch axis, outputs wanted, options."""

    id: str | None
    inputs: dict[str, Array]
    rows: int
    outputs: tuple[RequestedOutput, ...]
    timeout_us: int | None


def input_spec(sig: Signature, name: str) -> InputSpec:
    """The model's input called ``name``; any protocol's request names its inputs."""
    spec = sig.inputs.get(name)
    if spec is None:
        raise BadRequest(f"unknown input '{name}' for model '{sig.model}'; it expects {sorted(sig.inputs)}")
    return spec


def checked_elements(sig: Signature, name: str, datatype: str, shape: list[Any]) -> int:
    """The number of elements an input of ``datatype`` and ``shape`` carries, once both match the model's input.

    Raises:
        BadRequest: the datatype or the shape (rank, dims, batch axis) is not what the model takes.
    """
    spec = input_spec(sig, name)
    where = f"input '{name}'"
    if datatype != spec.datatype:
        raise BadRequest(f"{where} has datatype {datatype}, model '{sig.model}' expects {spec.datatype}")
    if (
        len(shape) != len(spec.dims) + 1
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or tuple(shape[1:]) != spec.dims
        or shape[0] < 1
    ):
        raise BadRequest(f"{where} has shape {shape}, expected {sig.expected_shape(name)}")
    return int(shape[0] * spec.row_elements)


def checked_byte_size(name: str, size: object, shape: list[int], datatype: str, needed: int, how: str = "") -> None:
    """Refuse binary tensor data whose ``size`` is not the ``needed`` bytes of ``shape``.

    ``how`` says how the size was given (the binary extension's ``binary_data_size`` by default).
    """
    if not isinstance(size, int) or isinstance(size, bool) or size != needed:
        given = how or f"binary_data_size {size}"
        raise BadRequest(f"input '{name}' has {given}, but shape {shape} of {datatype} needs {needed} bytes")


def batch_rows(inputs: Mapping[str, Array], sig: Signature) -> int:
    """The batch size (axis 0) every input shares, once every input the model takes is present.

    Raises:
        BadRequest: an input is missing, or the inputs disagree on the batch size.
    """
    if len(inputs) != len(sig.inputs):
        raise BadRequest(f"missing input(s) {sorted(set(sig.inputs) - set(inputs))} for model '{sig.model}'")
    rows = {array.shape[0] for array in inputs.values()}
    if len(rows) != 1:
        raise BadRequest(f"inputs disagree on the batch size (axis 0): {sorted(rows)}")
    return int(rows.pop())


def checked_timeout(timeout: object) -> int | None:
    """A request's ``timeout`` parameter: whole microseconds from 0 to ``MAX_TIMEOUT_US``, or None when absent."""
    if timeout is not None and (type(timeout) is not int or not 0 <= timeout <= MAX_TIMEOUT_US):  # bool is no int
        raise BadRequest(
            f"parameters.timeout must be a whole number of microseconds from 0 to {MAX_TIMEOUT_US} (one hour), "
            f"got {timeout!r:.40}",
            code="bad_timeout",
        )
    return timeout


def requested_output(sig: Signature, name: str, binary: object, classification: object) -> RequestedOutput:
    """One output a request asks for, checked: a known name, ``binary`` a boolean, ``classification`` k >= 0."""
    if name not in sig.outputs:
        raise BadRequest(f"unknown output '{name}' for model '{sig.model}'; it has {list(sig.outputs)}")
    k = classification
    if not isinstance(binary, bool) or not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise BadRequest(
            f"output '{name}': parameters.binary_data must be a boolean and classification an integer >= 0"
        )
    return RequestedOutput(name, binary, k)


def classification(values: Array, k: int, labels: tuple[str, ...]) -> Array:
    """Triton's classification extension: the top ``k`` of each row as BYTES ``"value:index[:label]"``."""
    rows = values.reshape(values.shape[0], -1)
    k = min(k, rows.shape[1])
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    out = np.empty(order.shape, dtype=object)
    for r, row in enumerate(order):
        for c, idx in enumerate(row):
            label = f":{labels[idx]}" if labels else ""
            out[r, c] = f"{rows[r, idx]:f}:{idx}{label}".encode()
    return out


def bytes_tensor(array: Array) -> bytes:
    """The binary form of a BYTES tensor: each element as a 4-byte little-endian length and its bytes."""
    return b"".join(len(item).to_bytes(4, "little") + item for item in array.reshape(-1))


def output_tensor(out: RequestedOutput, outputs: Mapping[str, Array], labels: tuple[str, ...]) -> tuple[str, Array]:
    """The datatype and array that answer a requested output: the model's output, or its top k as BYTES."""
    array = outputs[out.name]
    if out.classification:
        return "BYTES", classification(array, out.classification, labels)
    return NUMPY_TO_V2[array.dtype.str], array
