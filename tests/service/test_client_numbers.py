"""Numbers clients write as text: only plain ASCII forms within the field's bound are read, everything else is None.

Each of these inputs was a 500 before (``'²'.isdigit()`` is True and ``int('²')`` raises; ``float`` reads ``inf``).
"""

from __future__ import annotations

import pytest
from starlette.requests import Request

from service.api.client_numbers import MAX_TIMEOUT_MS, decimal_number, whole_number
from service.api.request_info import timeout_header_us
from service.errors import BadRequest

NOT_WHOLE = [
    "",
    "²",
    "¹",
    "³",
    "٣",
    "１",
    "-1",
    "+1",
    "1.0",
    " 1",
    "1 ",
    "1_0",
    "0x10",
    "1e3",
    "inf",
    "nan",
    "9" * 5000,
]
NOT_DECIMAL = ["", "²", "٣", "-1", "+1", "1e3", "1E3", "inf", "Infinity", "nan", "1e309", "1_0", "1.2.3", ".", "1,5"]


@pytest.mark.parametrize("raw", NOT_WHOLE, ids=ascii)
def test_whole_number_reads_ascii_digits_only(raw: str) -> None:
    assert whole_number(raw, 10**30) is None


@pytest.mark.parametrize(
    ("raw", "maximum", "value"),
    [
        ("0", 5, 0),
        ("5", 5, 5),
        ("6", 5, None),
        ("007", 10, 7),
        ("0" * 5000 + "3", 10, 3),
        ("1" + "0" * 40, 10**40, 10**40),
    ],
    ids=lambda v: ascii(v)[:20],
)
def test_whole_number_is_bounded_without_reading_more_digits_than_the_bound_has(
    raw: str, maximum: int, value: int | None
) -> None:
    assert whole_number(raw, maximum) == value


@pytest.mark.parametrize("raw", [*NOT_DECIMAL, "1" * 40], ids=ascii)
def test_decimal_number_reads_plain_ascii_decimals_only(raw: str) -> None:
    assert decimal_number(raw, 1e100) is None


@pytest.mark.parametrize(("raw", "value"), [("0", 0.0), ("250", 250.0), ("0.5", 0.5), (".5", 0.5), ("5.", 5.0)])
def test_decimal_number_reads_integers_and_fractions(raw: str, value: float) -> None:
    assert decimal_number(raw, 1000) == value


def _request(timeout: str) -> Request:
    return Request({"type": "http", "headers": [(b"x-request-timeout-ms", timeout.encode())]})


@pytest.mark.parametrize(
    ("raw", "us"), [("0", 0), ("250", 250_000), ("0.5", 500), ("0.0001", 1), (str(MAX_TIMEOUT_MS), 3_600_000_000)]
)
def test_timeout_header_in_microseconds_keeps_a_tiny_deadline_a_deadline(raw: str, us: int) -> None:
    assert timeout_header_us(_request(raw)) == us


@pytest.mark.parametrize("raw", [*NOT_DECIMAL, str(MAX_TIMEOUT_MS + 1), "1" * 400], ids=lambda v: ascii(v)[:20])
def test_a_bad_timeout_header_is_a_400_naming_the_header_the_value_and_the_range(raw: str) -> None:
    with pytest.raises(BadRequest, match=f"X-Request-Timeout-Ms is .*, expected a number of milliseconds from 0 to "
                       f"{MAX_TIMEOUT_MS}") as err:  # fmt: skip
        timeout_header_us(_request(raw))
    assert err.value.code == "bad_timeout"
