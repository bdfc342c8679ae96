"""Three spellings of one tensor element type: KServe v2 (``FP32``), numpy (``<f4``), ORT (``tensor(float)``).

Numpy types are explicitly little-endian because the v2 binary extension sends raw little-endian bytes.
"""

from __future__ import annotations

import numpy as np

V2_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

#: Keyed by ``dtype.str`` (``<f4``, ``|u1``) so outputs map back to their v2 name in one lookup.
NUMPY_TO_V2: dict[str, str] = {dtype.str: name for name, dtype in V2_TO_NUMPY.items()}

ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}
