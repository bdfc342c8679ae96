"""Binary v2 request headers already checked, by their bytes: a request repeating one skips the parse and checks.

A client sending tensors of one shape sends the same JSON header every time (tritonclient does, unless it numbers
its requests), and parsing and checking it cost about a tenth of a LeNet-5 request's CPU. What a header says is a
pure function of its bytes and the model's signature, so a ``Layout`` found here for the same signature object and
the same length of binary data describes the request exactly as a full parse would; its inputs are views of the
new body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.api.v2_tensors import InferRequest, RequestedOutput
from service.signature import Signature

#: Headers kept, across models; past this many the cache starts over (a client varying its header per request, by an
#: ``id`` say, gains nothing from it and must not grow it).
LAYOUTS_MAX = 256


@dataclass(frozen=True)
class Layout:
    """A checked binary request header: each input as (name, dtype, elements, shape, offset into the binary data),
    the binary data's length, and the request's other fields."""

    inputs: tuple[tuple[str, np.dtype[Any], int, tuple[int, ...], int], ...]
    binary_size: int
    rows: int
    outputs: tuple[RequestedOutput, ...]
    timeout_us: int | None
    id: str | None

    def request(self, binary: memoryview) -> InferRequest:
        """The request this layout describes, its inputs zero-copy views of ``binary``."""
        inputs = {
            name: np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            for name, dtype, count, shape, offset in self.inputs
        }
        return InferRequest(id=self.id, inputs=inputs, rows=self.rows, outputs=self.outputs, timeout_us=self.timeout_us)


class Layouts:
    """The process's checked headers (the event loop's: HTTP requests are parsed there)."""

    def __init__(self, limit: int = LAYOUTS_MAX) -> None:
        self.limit = limit
        self._known: dict[bytes, tuple[Signature, Layout]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def find(self, header: bytes, sig: Signature, binary_size: int) -> Layout | None:
        """The layout of ``header`` checked for ``sig`` (that object: a reloaded model starts afresh), when its
        binary data had ``binary_size`` bytes; None otherwise."""
        known = self._known.get(header)
        if known is None or known[0] is not sig or known[1].binary_size != binary_size:
            return None
        return known[1]

    def keep(self, header: bytes, sig: Signature, layout: Layout) -> None:
        """Remember ``header``'s layout for ``sig``."""
        if len(self._known) >= self.limit:
            self._known.clear()
        self._known[header] = (sig, layout)

    def clear(self) -> None:
        self._known.clear()


LAYOUTS = Layouts()
