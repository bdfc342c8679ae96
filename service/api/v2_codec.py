"""KServe v2 infer request/response bodies: JSON tensors and Triton's binary tensor data extension, both directions.

A binary request is ``<JSON header><input bytes>…`` with ``Inference-Header-Content-Length`` giving the header's
length and each input's ``parameters.binary_data_size`` its share; inputs become zero-copy numpy views of the body.
A binary response is built the same way. Every malformed request raises ``BadRequest`` saying what was expected.

A client sending tensors of one shape sends the same JSON header every time: ``service/api/v2_layouts.py`` keeps
what a checked binary header says, and a request whose header was seen before skips the parse and the checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.api.v2_layouts import LAYOUTS, Layout
from service.api.v2_tensors import (
    Array,
    InferRequest,
    RequestedOutput,
    batch_rows,
    bytes_tensor,
    checked_byte_size,
    checked_elements,
    checked_timeout,
    input_spec,
    output_tensor,
    requested_output,
)
from service.errors import BadRequest
from service.signature import Signature


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadRequest(f"{where}: field '{key}' must be {names}, got {type(value).__name__}")
    return value


def _parameters(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``obj["parameters"]``: an object, or empty when absent (an empty list or string is not an object either)."""
    params = obj.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"{where}'parameters' must be an object, got {type(params).__name__}")
    return params or {}


def _parse_input(
    raw: Any, sig: Signature, binary: memoryview, offset: int
) -> tuple[str, Array, int]:  # (name, array, new binary offset)
    if not isinstance(raw, dict):
        raise BadRequest(f"each entry of 'inputs' must be an object, got {type(raw).__name__}")
    name = _field(raw, "name", str, "input")
    spec = input_spec(sig, name)
    where = f"input '{name}'"
    datatype = _field(raw, "datatype", str, where)
    shape = _field(raw, "shape", list, where) if datatype == spec.datatype else []
    count = checked_elements(sig, name, datatype, shape)
    params = _parameters(raw, f"{where}: ")
    if "shared_memory_region" in params:
        raise BadRequest(f"{where}: shared memory is not supported; send the data in the body")
    size = params.get("binary_data_size")
    if size is not None:
        checked_byte_size(name, size, shape, datatype, count * spec.dtype.itemsize)
        if offset + size > len(binary):
            raise BadRequest(
                f"{where} needs bytes {offset}..{offset + size} of the binary data, which holds only {len(binary)}"
            )
        array = np.frombuffer(binary, dtype=spec.dtype, count=count, offset=offset).reshape(shape)
        return name, array, offset + size
    if "data" not in raw:
        raise BadRequest(f"{where} carries neither 'data' nor parameters.binary_data_size")
    data = raw["data"]
    if not isinstance(data, list):
        raise BadRequest(f"{where}: 'data' is not a (nested) list of {datatype} numbers, got {type(data).__name__}")
    try:
        values = np.asarray(data)
        flat = np.asarray(data, dtype=spec.dtype).reshape(-1) if values.dtype.kind in "biuf" else None
    except (TypeError, ValueError, OverflowError) as err:
        raise BadRequest(f"{where}: 'data' is not a (nested) list of {datatype} numbers ({err})") from err
    if flat is None:  # numpy would read the strings "1.5" and "NaN" as numbers; JSON tensors carry numbers only
        raise BadRequest(f"{where}: 'data' is not a (nested) list of {datatype} numbers (it holds strings or nulls)")
    if values.dtype.kind == "f" and flat.dtype.kind in "iu" and not np.array_equal(values.reshape(-1), flat):
        # numpy casts 7.5 to 7 and -1.0 to 255 silently; an integer tensor must carry its values exactly
        raise BadRequest(f"{where}: 'data' holds numbers that are not {datatype} values (fractions or out of range)")
    if flat.size != count:
        raise BadRequest(f"{where} has {flat.size} values in 'data', but shape {shape} needs {count}")
    return name, flat.reshape(shape), offset


def _parse_outputs(raw: Any, sig: Signature, binary_default: bool) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return tuple(RequestedOutput(name, binary_default) for name in sig.outputs)
    if not isinstance(raw, list):
        raise BadRequest(f"'outputs' must be a list, got {type(raw).__name__}")
    wanted = []
    for entry in raw:
        name = _field(entry if isinstance(entry, dict) else {}, "name", str, "output")
        params = _parameters(entry, f"output '{name}': ") if name in sig.outputs else {}
        wanted.append(
            requested_output(sig, name, params.get("binary_data", binary_default), params.get("classification", 0))
        )
    return tuple(wanted)


def parse_infer_request(body: bytes, header_length: int | None, sig: Signature) -> InferRequest:
    """Parse and check one infer request body against a model's signature.

    Args:
        body: The whole (already decompressed) request body.
        header_length: ``Inference-Header-Content-Length``, or None when the body is all JSON.
        sig: The model's signature.

    Raises:
        BadRequest: naming the field, the value received and what was expected.
    """
    if header_length is None:  # all JSON: the data is in the header, nothing to keep
        return _parse(body, memoryview(b""), sig).request
    if not 0 < header_length <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length is {header_length}, but the body has {len(body)} bytes")
    header, binary = body[:header_length], memoryview(body)[header_length:]
    known = LAYOUTS.find(header, sig, len(binary))
    if known is not None:
        return known.request(binary)
    parsed = _parse(header, binary, sig)
    if parsed.binary_at is not None:  # every input came from the binary data: the header alone describes it
        LAYOUTS.keep(header, sig, parsed.layout())
    return parsed.request


@dataclass(frozen=True)
class _Parsed:
    """A request parsed in full, and where each input's bytes started when all came from the binary data."""

    request: InferRequest
    binary_at: tuple[int, ...] | None
    binary_size: int

    def layout(self) -> Layout:
        assert self.binary_at is not None
        r = self.request
        inputs = tuple(
            (name, array.dtype, array.size, array.shape, at)
            for (name, array), at in zip(r.inputs.items(), self.binary_at, strict=True)
        )
        return Layout(inputs, self.binary_size, r.rows, r.outputs, r.timeout_us, r.id)


def _parse(header_bytes: bytes, binary: memoryview, sig: Signature) -> _Parsed:
    """``parse_infer_request`` without the layout cache."""
    try:
        header = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"inference request header is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise BadRequest(f"inference request must be a JSON object, got {type(header).__name__}")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest(f"'inputs' must be a non-empty list; model '{sig.model}' expects {sorted(sig.inputs)}")
    offset = 0
    inputs: dict[str, Array] = {}
    starts: list[int] = []  # where each binary input began; one from JSON data stops the layout
    for raw in raw_inputs:
        start = offset
        name, array, offset = _parse_input(raw, sig, binary, offset)
        if name in inputs:
            raise BadRequest(f"input '{name}' appears twice")
        inputs[name] = array
        starts.append(start if offset > start else -1)
    if len(inputs) == len(sig.inputs) and offset != len(binary):
        raise BadRequest(
            f"the body carries {len(binary)} bytes of binary data but the inputs' binary_data_size add up to {offset}"
        )
    rows = batch_rows(inputs, sig)
    params = _parameters(header, "")
    timeout = checked_timeout(params.get("timeout"))
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequest(f"parameters.binary_data_output must be a boolean, got {binary_default!r}")
    request_id = header.get("id")
    request = InferRequest(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        rows=rows,
        outputs=_parse_outputs(header.get("outputs"), sig, binary_default),
        timeout_us=timeout,
    )
    return _Parsed(request, None if -1 in starts else tuple(starts), offset)


def encode_infer_response(
    model: str,
    version: str,
    request_id: str | None,
    outputs: Mapping[str, Array],
    wanted: tuple[RequestedOutput, ...],
    labels: tuple[str, ...],
) -> tuple[bytes, int | None]:
    """Render outputs as a v2 response body; returns the body and the JSON header's length when binary follows."""
    described: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for out in wanted:
        datatype, array = output_tensor(out, outputs, labels)
        entry: dict[str, Any] = {"name": out.name, "datatype": datatype, "shape": list(array.shape)}
        if out.binary:
            data = bytes_tensor(array) if datatype == "BYTES" else np.ascontiguousarray(array).data.cast("B")
            entry["parameters"] = {"binary_data_size": len(data)}
            buffers.append(data)
        elif datatype == "BYTES":
            entry["data"] = [item.decode() for item in array.reshape(-1)]
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        described.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request_id is not None:
        response["id"] = request_id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)
