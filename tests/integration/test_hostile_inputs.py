"""Hostile input, case by case, against the real server: each gets its exact 4xx/504 and code, never a 500.

One table of cases across images, multipart, ``:predict`` JSON, v2 JSON and binary tensors, headers, deadlines,
compression bombs and the HTTP framing the ASGI layer sees. After every case the server must still be ready and
answer a normal v2 request with the reference model's output. Run: pytest tests/integration/test_hostile_inputs.py -s
"""

from __future__ import annotations

import base64
import gzip
import socket
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pytest
from live_server import MAX_BODY_BYTES, Reference, Server, metric_sum
from test_errors import png, png_bomb, v2_body

MODEL = "lenet5_digits"
CLASSIFY = f"/v1/models/{MODEL}/classify"
PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
PNG = png()
IMAGE = {"Content-Type": "image/png"}
ROW_BYTES = 32 * 32 * 4  # one FP32 row of the model's input
Body = bytes | Callable[[], Iterator[bytes]]  # a callable streams its chunks (chunked transfer encoding)


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get."""

    group: str
    name: str
    path: str
    body: Body
    headers: dict[str, str | bytes] = field(default_factory=dict)
    status: int = 400
    code: str = "bad_request"
    fragment: str = ""  # a part of the message that must appear, where the message is the point
    raw: bytes | None = None  # sent as is over a socket, for framing httpx will not produce


def tensor(**changes: object) -> dict[str, object]:
    """A valid v2 input for one row, with ``changes`` applied (a value of None removes the field)."""
    base: dict[str, object] = {"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.0] * 1024}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def infer_json(*inputs: dict[str, object], **extra: object) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def binary(size: object = ROW_BYTES, payload: int = ROW_BYTES, shape: object = None) -> tuple[bytes, int]:
    """A binary-extension body: the JSON header declaring ``size`` bytes, then ``payload`` bytes."""
    entry = tensor(data=None, parameters={"binary_data_size": size}, shape=shape or [1, 1, 32, 32])
    header = infer_json(entry)
    return header + b"\0" * payload, len(header)


def latin1(value: str) -> bytes:
    """A header value as the bytes on the wire: '²' is the one byte 0xB2, which the server reads back as '²'."""
    return value.encode("latin-1")


def ihcl(value: str | bytes) -> dict[str, str | bytes]:
    return {"Inference-Header-Content-Length": latin1(value) if isinstance(value, str) else value}


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "xyz", close: bool = True) -> bytes:
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def form(boundary: str = "xyz") -> dict[str, str | bytes]:
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def predict(instances: object) -> bytes:
    return orjson.dumps({"instances": instances})


def chunks(data: bytes, size: int = 65536) -> Callable[[], Iterator[bytes]]:
    return lambda: (data[i : i + size] for i in range(0, len(data), size))


BOMB = gzip.compress(b"\0" * (MAX_BODY_BYTES + 4096))
DEFLATE_BOMB = zlib.compress(b"\0" * (MAX_BODY_BYTES + 4096))
GOOD_INFER = infer_json(tensor())
BAD_TIMEOUTS = [
    "inf",
    "-inf",
    "Infinity",
    "nan",
    "NaN",
    "1e309",
    "1e3",
    "-1",
    "+5",
    "²",
    "¹",
    "0x10",
    "1_000",
    "abc",
    "1.2.3",
    "3600001",
    "9" * 400,
    "5 ms",
    ",",
]
BAD_TOP_K = ["²", "³", "0", "-1", "11", "1.5", "abc", "", "1e1", "9" * 5000, "%EF%BC%91", "%D9%A3", "+3"]
BAD_HEADER_LENGTHS = ["²", "-5", "abc", "1.5", "9" * 30, "0x10", ""]

CASES: list[Case] = [
    # Images sent to classify.
    Case("image", "corrupt png", CLASSIFY, b"\x89PNG\r\n\x1a\n" + b"x" * 50, IMAGE, code="invalid_image"),
    Case("image", "truncated png", CLASSIFY, PNG[:60], IMAGE, code="invalid_image"),
    Case("image", "png cut in half", CLASSIFY, PNG[: len(PNG) // 2], IMAGE, code="invalid_image"),
    Case("image", "jpeg magic then junk", CLASSIFY, b"\xff\xd8\xff\xe0" + b"\0" * 100, IMAGE, code="invalid_image"),
    Case("image", "gif magic then junk", CLASSIFY, b"GIF89a" + b"\x01" * 40, IMAGE, code="invalid_image"),
    Case("image", "bmp magic then junk", CLASSIFY, b"BM" + b"\xff" * 60, IMAGE, code="invalid_image"),
    Case(
        "image", "webp magic then junk", CLASSIFY, b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 20, IMAGE, code="invalid_image"
    ),
    Case("image", "zero bytes", CLASSIFY, b"", IMAGE, code="invalid_image", fragment="0 bytes"),
    Case("image", "text", CLASSIFY, b"hello, world", IMAGE, code="invalid_image"),
    Case("image", "one byte", CLASSIFY, b"\x89", IMAGE, code="invalid_image"),
    Case("image", "png bomb", CLASSIFY, png_bomb(3000), IMAGE, 413, "image_too_large"),
    Case("image", "text/plain", CLASSIFY, PNG, {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    Case(
        "image",
        "json to classify",
        CLASSIFY,
        b"{}",
        {"Content-Type": "application/json"},
        415,
        "unsupported_media_type",
    ),
    Case(
        "image",
        "png bytes as octet-stream but corrupt",
        CLASSIFY,
        PNG[:30],
        {"Content-Type": "application/octet-stream"},
        code="invalid_image",
    ),
    # Multipart uploads.
    Case(
        "multipart",
        "no boundary",
        CLASSIFY,
        multipart(("f", "a.png", PNG)),
        {"Content-Type": "multipart/form-data"},
        code="bad_multipart",
    ),
    Case(
        "multipart",
        "boundary not in the body",
        CLASSIFY,
        multipart(("f", "a.png", PNG), boundary="other"),
        form(),
        code="bad_multipart",
    ),
    Case(
        "multipart",
        "no closing boundary",
        CLASSIFY,
        multipart(("f", "a.png", PNG), close=False),
        form(),
        code="bad_request",
        fragment="no image",
    ),
    Case("multipart", "garbage", CLASSIFY, b"\0\1\2garbage", form(), code="bad_multipart"),
    Case("multipart", "empty body", CLASSIFY, b"", form(), code="bad_request", fragment="no image"),
    Case("multipart", "no file field", CLASSIFY, multipart(("note", None, b"hi")), form(), fragment="no image"),
    Case("multipart", "empty file part", CLASSIFY, multipart(("f", "a.png", b"")), form(), code="invalid_image"),
    Case(
        "multipart",
        "corrupt file part",
        CLASSIFY,
        multipart(("f", "a.png", b"junk")),
        form(),
        code="invalid_image",
        fragment="('a.png')",
    ),
    Case(
        "multipart",
        "second part corrupt",
        CLASSIFY,
        multipart(("f", "a.png", PNG), ("f", "b.png", PNG[:50])),
        form(),
        code="invalid_image",
        fragment="image 2 of 2",
    ),
    Case(
        "multipart",
        "65 files",
        CLASSIFY,
        multipart(*[("f", f"{i}.png", PNG) for i in range(65)]),
        form(),
        code="batch_too_large",
        fragment="65 images",
    ),
    Case(
        "multipart",
        "66 files",
        CLASSIFY,
        multipart(*[("f", f"{i}.png", PNG) for i in range(66)]),
        form(),
        code="bad_multipart",
        fragment="Too many files",
    ),
    # :predict JSON.
    Case("predict", "not json", PREDICT, b"{oops", fragment="not valid JSON"),
    Case("predict", "empty body", PREDICT, b"", fragment="not valid JSON"),
    Case("predict", "json array", PREDICT, b"[1, 2]", fragment='expected {"instances"'),
    Case("predict", "instances missing", PREDICT, b'{"inputs": []}', fragment='expected {"instances"'),
    Case("predict", "instances not a list", PREDICT, b'{"instances": "x"}', fragment='expected {"instances"'),
    Case("predict", "instances empty", PREDICT, predict([]), fragment="with at least one instance"),
    Case("predict", "instance a number", PREDICT, predict([5]), fragment="instances[0] must be"),
    Case("predict", "b64 a number", PREDICT, predict([{"b64": 5}]), fragment="instances[0] must be"),
    Case("predict", "b64 null", PREDICT, predict([{"b64": None}]), fragment="instances[0] must be"),
    Case("predict", "bad base64", PREDICT, predict([{"b64": "@@@"}]), fragment="not valid base64"),
    Case("predict", "base64 bad padding", PREDICT, predict([{"b64": "abc"}]), fragment="not valid base64"),
    Case("predict", "base64 of text", PREDICT, predict([{"b64": "aGVsbG8="}]), code="invalid_image"),
    Case("predict", "base64 of nothing", PREDICT, predict([{"b64": ""}]), code="invalid_image"),
    Case(
        "predict", "second instance bad", PREDICT, predict([{"b64": "aGk="}, {"b64": "!"}]), fragment="instances[1].b64"
    ),
    Case("predict", "65 instances", PREDICT, predict([{"b64": "aGk="}] * 65), code="batch_too_large"),
    Case("predict", "deep nesting", PREDICT, b"[" * 5000 + b"]" * 5000, fragment="not valid JSON"),
    # v2 JSON tensors.
    Case("v2 json", "not json", INFER, b"{oops", fragment="not valid JSON"),
    Case("v2 json", "empty body", INFER, b"", fragment="not valid JSON"),
    Case("v2 json", "json string", INFER, b'"hi"', fragment="must be a JSON object"),
    Case("v2 json", "deep nesting", INFER, b"[" * 5000 + b"]" * 5000, fragment="not valid JSON"),
    Case(
        "v2 json",
        "integer past 64 bits",
        INFER,
        b'{"inputs": [{"name": "input", "shape": [36893488147419103232, 1, 32, 32], "datatype": "FP32", "data": []}]}',
        fragment="has shape",
    ),
    Case("v2 json", "inputs missing", INFER, b"{}", fragment="'inputs' must be a non-empty list"),
    Case("v2 json", "inputs empty", INFER, b'{"inputs": []}', fragment="'inputs' must be a non-empty list"),
    Case("v2 json", "inputs an object", INFER, b'{"inputs": {}}', fragment="'inputs' must be a non-empty list"),
    Case("v2 json", "input a string", INFER, b'{"inputs": ["x"]}', fragment="must be an object"),
    Case("v2 json", "wrong name", INFER, infer_json(tensor(name="x")), fragment="unknown input 'x'"),
    Case("v2 json", "name missing", INFER, infer_json(tensor(name=None)), fragment="field 'name' must be str"),
    Case("v2 json", "name a number", INFER, infer_json(tensor(name=5)), fragment="field 'name' must be str"),
    Case("v2 json", "datatype INT32", INFER, infer_json(tensor(datatype="INT32")), fragment="expects FP32"),
    Case("v2 json", "datatype lower case", INFER, infer_json(tensor(datatype="fp32")), fragment="expects FP32"),
    Case("v2 json", "datatype missing", INFER, infer_json(tensor(datatype=None)), fragment="'datatype' must be"),
    Case("v2 json", "datatype a number", INFER, infer_json(tensor(datatype=32)), fragment="'datatype' must be"),
    Case("v2 json", "shape 28x28", INFER, infer_json(tensor(shape=[1, 1, 28, 28])), fragment="expected [N, 1, 32"),
    Case("v2 json", "shape without batch", INFER, infer_json(tensor(shape=[1, 32, 32])), fragment="has shape"),
    Case("v2 json", "shape empty", INFER, infer_json(tensor(shape=[])), fragment="has shape []"),
    Case("v2 json", "shape zero rows", INFER, infer_json(tensor(shape=[0, 1, 32, 32], data=[])), fragment="has shape"),
    Case("v2 json", "shape negative", INFER, infer_json(tensor(shape=[-1, 1, 32, 32])), fragment="has shape"),
    Case("v2 json", "shape of strings", INFER, infer_json(tensor(shape=["1", 1, 32, 32])), fragment="has shape"),
    Case("v2 json", "shape of floats", INFER, infer_json(tensor(shape=[1.0, 1, 32, 32])), fragment="has shape"),
    Case("v2 json", "shape of booleans", INFER, infer_json(tensor(shape=[True, 1, 32, 32])), fragment="has shape"),
    Case("v2 json", "shape a string", INFER, infer_json(tensor(shape="1x1x32x32")), fragment="'shape' must be"),
    Case("v2 json", "shape missing", INFER, infer_json(tensor(shape=None)), fragment="'shape' must be"),
    Case(
        "v2 json",
        "huge shape product",
        INFER,
        infer_json(tensor(shape=[10**15, 1, 32, 32])),
        fragment="but shape [1000000000000000, 1, 32, 32] needs",
    ),
    Case("v2 json", "int64 max rows", INFER, infer_json(tensor(shape=[2**63 - 1, 1, 32, 32])), fragment="needs"),
    Case("v2 json", "65 rows", INFER, v2_body([65, 1, 32, 32]), code="batch_too_large"),
    Case("v2 json", "too few values", INFER, infer_json(tensor(data=[0.0] * 1023)), fragment="has 1023 values"),
    Case("v2 json", "too many values", INFER, infer_json(tensor(data=[0.0] * 1025)), fragment="has 1025 values"),
    Case(
        "v2 json",
        "ragged nesting",
        INFER,
        infer_json(tensor(data=[[0.0] * 1000, [0.0] * 24])),
        fragment="not a (nested) list",
    ),
    Case("v2 json", "non-numeric strings", INFER, infer_json(tensor(data=["a"] * 1024)), fragment="not a (nested)"),
    Case("v2 json", "NaN strings", INFER, infer_json(tensor(data=["NaN"] * 1024)), fragment="holds strings"),
    Case("v2 json", "number strings", INFER, infer_json(tensor(data=["1.5"] * 1024)), fragment="holds strings"),
    Case("v2 json", "nulls", INFER, infer_json(tensor(data=[None] * 1024)), fragment="holds strings or nulls"),
    Case("v2 json", "objects", INFER, infer_json(tensor(data=[{}] * 1024)), fragment="not a (nested) list"),
    Case("v2 json", "data a number", INFER, infer_json(tensor(data=0.5)), fragment="not a (nested) list"),
    Case(
        "v2 json",
        "data null",
        INFER,
        orjson.dumps({"inputs": [tensor() | {"data": None}]}),
        fragment="not a (nested) list",
    ),
    Case("v2 json", "data missing", INFER, infer_json(tensor(data=None)), fragment="neither 'data'"),
    Case("v2 json", "input twice", INFER, infer_json(tensor(), tensor()), fragment="appears twice"),
    Case("v2 json", "parameters a string", INFER, infer_json(tensor(parameters="x")), fragment="must be an object"),
    Case(
        "v2 json",
        "output parameters a list",
        INFER,
        infer_json(tensor(), outputs=[{"name": "logits", "parameters": [1]}]),
        fragment="must be an object",
    ),
    Case(
        "v2 json",
        "output parameters a string",
        INFER,
        infer_json(tensor(), outputs=[{"name": "logits", "parameters": "x"}]),
        fragment="must be an object",
    ),
    Case(
        "v2 json",
        "request parameters empty list",
        INFER,
        infer_json(tensor(), parameters=[]),
        fragment="'parameters' must be an object",
    ),
    Case("v2 json", "parameters a list", INFER, infer_json(tensor(parameters=[])), fragment="must be an object"),
    Case(
        "v2 json",
        "shared memory",
        INFER,
        infer_json(tensor(parameters={"shared_memory_region": "r"})),
        fragment="shared memory is not supported",
    ),
    Case(
        "v2 json",
        "request parameters a list",
        INFER,
        infer_json(tensor(), parameters=[1]),
        fragment="'parameters' must be an object",
    ),
    Case(
        "v2 json",
        "binary_data_output a string",
        INFER,
        infer_json(tensor(), parameters={"binary_data_output": "y"}),
        fragment="binary_data_output must be a boolean",
    ),
    Case("v2 json", "unknown output", INFER, infer_json(tensor(), outputs=[{"name": "nope"}]), fragment="'nope'"),
    Case("v2 json", "outputs an object", INFER, infer_json(tensor(), outputs={}), fragment="'outputs' must be a list"),
    Case("v2 json", "output a string", INFER, infer_json(tensor(), outputs=["logits"]), fragment="'name' must be"),
    Case(
        "v2 json",
        "negative classification",
        INFER,
        infer_json(tensor(), outputs=[{"name": "logits", "parameters": {"classification": -1}}]),
        fragment="classification an integer >= 0",
    ),
    Case(
        "v2 json",
        "binary_data a string",
        INFER,
        infer_json(tensor(), outputs=[{"name": "logits", "parameters": {"binary_data": "yes"}}]),
        fragment="binary_data must be a boolean",
    ),
    # v2 binary tensor data.
    Case(
        "v2 binary",
        "header length past the body",
        INFER,
        binary()[0],
        ihcl(str(len(binary()[0]) + 10)),
        fragment="but the body has",
    ),
    Case("v2 binary", "header length zero", INFER, binary()[0], ihcl("0"), fragment="is 0, but the body has"),
    Case("v2 binary", "header length 11 digits", INFER, binary()[0], ihcl("99999999999"), fragment="but the body"),
    Case("v2 binary", "header length mid-json", INFER, binary()[0], ihcl("20"), fragment="not valid JSON"),
    Case(
        "v2 binary",
        "header length unicode bytes",
        INFER,
        binary()[0],
        ihcl("٣".encode()),
        fragment="expected the JSON header's length in bytes",
    ),
    *[
        Case(
            "v2 binary",
            f"header length {value[:12]!r}",
            INFER,
            binary()[0],
            ihcl(value),
            fragment=f"Inference-Header-Content-Length is {value[:40]!r}, expected the JSON header's length",
        )
        for value in BAD_HEADER_LENGTHS
    ],
    Case(
        "v2 binary",
        "size smaller than the shape",
        INFER,
        binary(size=100)[0],
        ihcl(str(binary(size=100)[1])),
        fragment="binary_data_size 100",
    ),
    Case(
        "v2 binary",
        "size larger than the shape",
        INFER,
        binary(size=8192)[0],
        ihcl(str(binary(size=8192)[1])),
        fragment="needs 4096 bytes",
    ),
    Case(
        "v2 binary",
        "size negative",
        INFER,
        binary(size=-4)[0],
        ihcl(str(binary(size=-4)[1])),
        fragment="binary_data_size -4",
    ),
    Case(
        "v2 binary",
        "size a string",
        INFER,
        binary(size="4096")[0],
        ihcl(str(binary(size="4096")[1])),
        fragment="binary_data_size 4096",
    ),
    Case(
        "v2 binary",
        "size a float",
        INFER,
        binary(size=4096.0)[0],
        ihcl(str(binary(size=4096.0)[1])),
        fragment="binary_data_size 4096.0",
    ),
    Case(
        "v2 binary",
        "binary data missing",
        INFER,
        binary(payload=0)[0],
        ihcl(str(binary(payload=0)[1])),
        fragment="which holds only 0",
    ),
    Case(
        "v2 binary",
        "binary data short",
        INFER,
        binary(payload=4000)[0],
        ihcl(str(binary(payload=4000)[1])),
        fragment="which holds only 4000",
    ),
    Case(
        "v2 binary",
        "trailing bytes",
        INFER,
        binary(payload=4100)[0],
        ihcl(str(binary(payload=4100)[1])),
        fragment="carries 4100 bytes of binary data",
    ),
    Case("v2 binary", "binary without header length", INFER, binary()[0], {}, fragment="not valid JSON"),
    Case(
        "v2 binary",
        "huge shape, binary",
        INFER,
        binary(shape=[10**12, 1, 32, 32])[0],
        ihcl(str(binary(shape=[10**12, 1, 32, 32])[1])),
        fragment="needs 4096000000000000 bytes",
    ),
    # Headers: the timeout, Content-Encoding, top_k.
    *[
        Case(
            "headers",
            f"timeout {value[:12]!r}",
            INFER,
            GOOD_INFER,
            {"X-Request-Timeout-Ms": latin1(value)},
            code="bad_timeout",
            fragment=f"X-Request-Timeout-Ms is {value[:40]!r}, expected a number of milliseconds",
        )
        for value in BAD_TIMEOUTS
    ],
    Case(
        "headers",
        "timeout unicode digit bytes",
        CLASSIFY,
        PNG,
        {**IMAGE, "X-Request-Timeout-Ms": "٣".encode()},
        code="bad_timeout",
    ),
    Case("headers", "timeout on classify", CLASSIFY, PNG, {**IMAGE, "X-Request-Timeout-Ms": "inf"}, code="bad_timeout"),
    Case(
        "headers",
        "timeout on predict",
        PREDICT,
        predict([{"b64": "aGk="}]),
        {"X-Request-Timeout-Ms": "1e309"},
        code="bad_timeout",
    ),
    Case("headers", "encoding br", INFER, GOOD_INFER, {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
    Case(
        "headers", "encoding compress", INFER, GOOD_INFER, {"Content-Encoding": "compress"}, 415, "unsupported_encoding"
    ),
    Case(
        "headers",
        "encoding listed twice",
        INFER,
        gzip.compress(gzip.compress(GOOD_INFER)),
        {"Content-Encoding": "gzip, gzip"},
        415,
        "unsupported_encoding",
    ),
    Case(
        "headers",
        "encoding latin-1 junk",
        INFER,
        GOOD_INFER,
        {"Content-Encoding": b"gz\xefp"},
        415,
        "unsupported_encoding",
    ),
    Case("headers", "gzip header, plain body", INFER, GOOD_INFER, {"Content-Encoding": "gzip"}, 400, "bad_encoding"),
    Case(
        "headers",
        "broken gzip",
        INFER,
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 20,
        {"Content-Encoding": "gzip"},
        400,
        "bad_encoding",
    ),
    Case(
        "headers",
        "truncated gzip",
        INFER,
        gzip.compress(GOOD_INFER)[:-30],
        {"Content-Encoding": "gzip"},
        400,
        "bad_encoding",
        "truncated",
    ),
    Case(
        "headers",
        "broken deflate",
        INFER,
        b"\x78\x9c" + b"\xff" * 20,
        {"Content-Encoding": "deflate"},
        400,
        "bad_encoding",
    ),
    Case(
        "headers", "gzip of nothing", INFER, gzip.compress(b""), {"Content-Encoding": "gzip"}, fragment="not valid JSON"
    ),
    Case(
        "headers",
        "gzip of a corrupt image",
        CLASSIFY,
        gzip.compress(PNG[:40]),
        {**IMAGE, "Content-Encoding": "gzip"},
        code="invalid_image",
    ),
    *[
        Case(
            "headers",
            f"top_k {value[:12]!r}",
            f"{CLASSIFY}?top_k={value}",
            PNG,
            IMAGE,
            code="bad_top_k",
            fragment="expected a whole number 1..10",
        )
        for value in BAD_TOP_K
    ],
    # Deadlines: below the 1 ms resolution is refused whatever the machine's speed.
    *[
        Case(
            "deadline",
            f"timeout {value} ms",
            INFER,
            GOOD_INFER,
            {"X-Request-Timeout-Ms": value},
            504,
            "deadline_exceeded",
        )
        for value in ("0.999", "0.5", "0.001", "0.0001")
    ],
    Case(
        "deadline",
        "classify, timeout 0.5 ms",
        CLASSIFY,
        PNG,
        {**IMAGE, "X-Request-Timeout-Ms": "0.5"},
        504,
        "deadline_exceeded",
    ),
    Case(
        "deadline",
        "predict, timeout 0.5 ms",
        PREDICT,
        predict([{"b64": base64.b64encode(PNG).decode()}]),
        {"X-Request-Timeout-Ms": "0.5"},
        504,
        "deadline_exceeded",
    ),
    *[
        Case(
            "deadline",
            f"parameters.timeout {value} us",
            INFER,
            infer_json(tensor(), parameters={"timeout": value}),
            status=504,
            code="deadline_exceeded",
        )
        for value in (1, 500, 999)
    ],
    Case(
        "deadline",
        "shorter of header and parameter wins",
        INFER,
        infer_json(tensor(), parameters={"timeout": 10_000_000}),
        {"X-Request-Timeout-Ms": "0.5"},
        504,
        "deadline_exceeded",
    ),
    *[
        Case(
            "deadline",
            f"parameters.timeout {value!r}",
            INFER,
            infer_json(tensor(), parameters={"timeout": value}),
            code="bad_timeout",
            fragment="parameters.timeout must be a whole number of microseconds from 0 to",
        )
        for value in (-1, 3_600_000_001, 2**63 - 1, 1.5, "100", True, [1])
    ],
    # Compression bombs: inflating stops at the body limit.
    Case("bomb", "gzip bomb to infer", INFER, BOMB, {"Content-Encoding": "gzip"}, 413, "body_too_large"),
    Case("bomb", "deflate bomb to infer", INFER, DEFLATE_BOMB, {"Content-Encoding": "deflate"}, 413, "body_too_large"),
    Case("bomb", "x-gzip bomb to infer", INFER, BOMB, {"Content-Encoding": "x-gzip"}, 413, "body_too_large"),
    Case("bomb", "gzip bomb to classify", CLASSIFY, BOMB, {**IMAGE, "Content-Encoding": "gzip"}, 413, "body_too_large"),
    Case("bomb", "gzip bomb to predict", PREDICT, BOMB, {"Content-Encoding": "gzip"}, 413, "body_too_large"),
    Case("bomb", "gzip bomb in chunks", INFER, chunks(BOMB, 512), {"Content-Encoding": "gzip"}, 413, "body_too_large"),
    # HTTP framing as the ASGI layer sees it.
    Case(
        "framing",
        "chunked body past the limit",
        INFER,
        chunks(b"\0" * (MAX_BODY_BYTES + 1)),
        {},
        413,
        "body_too_large",
        "body (at least)",
    ),
    Case("framing", "chunked, empty", INFER, chunks(b""), {}, fragment="not valid JSON"),
    Case("framing", "chunked corrupt image", CLASSIFY, chunks(PNG[:50], 7), IMAGE, code="invalid_image"),
    Case(
        "framing",
        "declared length past the limit",
        INFER,
        b"",
        status=413,
        code="body_too_large",
        fragment=f"body is {MAX_BODY_BYTES + 1} bytes",
        raw=f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode(),
    ),
]


def _raw_exchange(server: Server, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; read one response (status, body), every read bounded by the socket timeout."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        length = int({k.strip().lower(): v for k, v in fields.items()}.get(b"content-length", b"0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split()[1]), body[:length]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def normal(reference: Reference) -> tuple[bytes, np.ndarray]:
    """A normal v2 request and the logits the reference model gives for it."""
    x = np.random.default_rng(7).random((1, 1, 32, 32), dtype=np.float32)
    return infer_json(tensor(data=x.reshape(-1).tolist())), reference(MODEL, x)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.name}" for c in CASES])
def test_a_hostile_request_gets_its_status_and_code_and_the_server_carries_on(
    case: Case, server: Server, client: httpx.Client, normal: tuple[bytes, np.ndarray]
) -> None:
    if case.raw is not None:
        status, body = _raw_exchange(server, case.raw)
    else:
        content = case.body() if callable(case.body) else case.body
        response = client.post(case.path, content=content, headers=case.headers)
        status, body = response.status_code, response.content
    assert status == case.status, body[:500]
    error = orjson.loads(body)
    assert error["code"] == case.code, error
    assert case.fragment in error["error"], error
    assert client.get("/v2/health/ready").status_code == 200
    request, expected = normal
    answer = client.post(INFER, content=request)
    assert answer.status_code == 200, answer.text
    logits = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_summary_no_server_error_anywhere(server: Server, client: httpx.Client) -> None:
    groups = Counter(case.group for case in CASES)
    metrics = client.get("/metrics").text
    print(f"hostile inputs: {len(CASES)} cases ({', '.join(f'{g} {n}' for g, n in groups.items())}); no 500")
    assert len(CASES) > 100
    assert metric_sum(metrics, "cnnserve_requests_total", outcome="server_error") == 0
    assert "Traceback" not in server.log()
