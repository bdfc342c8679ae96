"""The v2 codec's layout cache: a binary header seen before skips the parse, and never changes what is parsed.

Every request parsed from a known header must equal a full parse of the same body: its own tensor bytes, its own
model's checks, the same refusals.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_v2_codec import client_body
from v2_model import SIG

from service.api.v2_codec import parse_infer_request
from service.api.v2_layouts import LAYOUTS, LAYOUTS_MAX
from service.errors import BadRequest


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    LAYOUTS.clear()


def _x(seed: int, rows: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 1, 4, 4)).astype(np.float32)


def test_a_known_header_parses_each_bodys_own_tensor() -> None:
    first, second = _x(1), _x(2)
    body1, length1 = client_body(first, binary=True, request_id="same", timeout=500)
    body2, length2 = client_body(second, binary=True, request_id="same", timeout=500)
    assert (length1, body1[:length1]) == (length2, body2[:length2])  # one header, two tensors
    parsed1 = parse_infer_request(body1, length1, SIG)
    assert len(LAYOUTS) == 1
    parsed2 = parse_infer_request(body2, length2, SIG)  # from the layout
    np.testing.assert_array_equal(parsed1.inputs["input"], first)
    np.testing.assert_array_equal(parsed2.inputs["input"], second)
    assert not parsed2.inputs["input"].flags.owndata  # still a view of its body
    LAYOUTS.clear()
    full = parse_infer_request(body2, length2, SIG)  # a full parse gives the same request
    np.testing.assert_array_equal(full.inputs["input"], parsed2.inputs["input"])
    assert (full.id, full.rows, full.outputs, full.timeout_us) == (parsed2.id, parsed2.rows, parsed2.outputs, 500)
    assert full.inputs["input"].shape == parsed2.inputs["input"].shape


def test_a_known_header_with_other_binary_data_is_refused_as_before() -> None:
    body, length = client_body(_x(3), binary=True)
    parse_infer_request(body, length, SIG)
    with pytest.raises(BadRequest, match="binary data"):
        parse_infer_request(body + b"\0\0\0\0", length, SIG)
    with pytest.raises(BadRequest, match="needs bytes"):
        parse_infer_request(body[:-4], length, SIG)


def test_a_layout_serves_only_the_model_it_was_checked_for() -> None:
    body, length = client_body(_x(4), binary=True)
    parse_infer_request(body, length, SIG)
    spec = SIG.inputs["input"]
    other = replace(SIG, model="other", inputs={"input": replace(spec, dims=(1, 2, 8))})  # as many bytes a row
    with pytest.raises(BadRequest, match=r"shape \[2, 1, 4, 4\]"):
        parse_infer_request(body, length, other)


def test_json_tensors_are_not_kept_and_the_cache_is_bounded() -> None:
    body, length = client_body(_x(5), binary=False)
    parse_infer_request(body, length, SIG)
    assert len(LAYOUTS) == 0
    for request in range(LAYOUTS_MAX + 10):
        body, length = client_body(_x(6, rows=1), binary=True, request_id=f"r{request}")
        assert parse_infer_request(body, length, SIG).id == f"r{request}"
        assert len(LAYOUTS) <= LAYOUTS_MAX
