"""gRPC infer messages and arrays: ``ModelInferRequest`` → checked input arrays, outputs → ``ModelInferResponse``.

Inputs come as ``raw_input_contents`` (little-endian bytes, one entry per input, in order: what ``tritonclient.grpc``
sends) or as typed ``contents``; outputs always go back as ``raw_output_contents``, as Triton answers. Every check
and every message is shared with the HTTP codec (``service.api.v2_tensors``), so both protocols refuse the same
request the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from service.api.v2_tensors import (
    Array,
    InferRequest,
    RequestedOutput,
    batch_rows,
    bytes_tensor,
    checked_byte_size,
    checked_elements,
    checked_timeout,
    output_tensor,
    requested_output,
)
from service.errors import BadRequest
from service.signature import Signature

#: The typed ``InferTensorContents`` field of each datatype; FP16 has none (raw bytes only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def parameter_value(parameter: service_pb2.InferParameter | None, absent: Any = None) -> Any:
    """The value an ``InferParameter`` holds, whichever of its fields is set (None when none is); ``absent`` when
    the request has no such parameter."""
    if parameter is None:
        return absent
    which = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, which) if which else None


def _typed(tensor: Any, spec_dtype: np.dtype[Any], shape: list[int], count: int) -> Array:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise BadRequest(
            f"input '{tensor.name}': {tensor.datatype} tensors have no typed contents field; send the bytes in "
            "raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise BadRequest(
            f"input '{tensor.name}' has {len(values)} values in contents.{field}, but shape {shape} needs {count}"
        )
    return np.asarray(values, dtype=spec_dtype).reshape(shape)


def parse_infer_request(request: service_pb2.ModelInferRequest, sig: Signature) -> InferRequest:
    """Check a ``ModelInferRequest`` against a model's signature and view its inputs as arrays.

    Raises:
        BadRequest: naming the input, the value received and what was expected (the HTTP codec's messages).
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents; send the bytes of "
            "every input in raw_input_contents, in the order of 'inputs', or of none"
        )
    inputs: dict[str, Array] = {}
    for i, tensor in enumerate(request.inputs):
        name, shape = tensor.name, list(tensor.shape)
        count = checked_elements(sig, name, tensor.datatype, shape)
        if name in inputs:
            raise BadRequest(f"input '{name}' appears twice")
        if "shared_memory_region" in tensor.parameters:
            raise BadRequest(f"input '{name}': shared memory is not supported; send the data in the request")
        dtype = sig.inputs[name].dtype
        if raw:
            data = raw[i]
            needed = count * dtype.itemsize
            checked_byte_size(name, len(data), shape, tensor.datatype, needed, f"{len(data)} bytes of raw contents")
            inputs[name] = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
        else:
            inputs[name] = _typed(tensor, dtype, shape, count)
    rows = batch_rows(inputs, sig)
    wanted = tuple(_requested(output, sig) for output in request.outputs)
    return InferRequest(
        id=request.id or None,
        inputs=inputs,
        rows=rows,
        outputs=wanted or tuple(RequestedOutput(name, True) for name in sig.outputs),
        timeout_us=checked_timeout(parameter_value(request.parameters.get("timeout"))),
    )


def _requested(output: Any, sig: Signature) -> RequestedOutput:
    """One requested output; ``tritonclient``'s ``class_count`` arrives as ``parameters.classification``."""
    k = parameter_value(output.parameters.get("classification"), absent=0)
    return requested_output(sig, output.name, True, k)


def encode_infer_response(
    model: str,
    version: str,
    request_id: str | None,
    outputs: Mapping[str, Array],
    wanted: tuple[RequestedOutput, ...],
    labels: tuple[str, ...],
) -> service_pb2.ModelInferResponse:
    """The ``ModelInferResponse`` carrying the outputs asked for as raw bytes (top-k as BYTES for classification)."""
    response = service_pb2.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    for out in wanted:
        datatype, array = output_tensor(out, outputs, labels)
        data = bytes_tensor(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
        response.outputs.add(name=out.name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(data)
    return response
