"""Numbers a client writes as text (query parameters, headers): ASCII only, bounded, read in one place.

``str.isdigit``, ``int`` and ``float`` accept more than a protocol allows: ``'²'.isdigit()`` is True and
``int('²')`` raises; ``int`` refuses more than 4,300 digits; ``float`` reads ``inf``, ``nan``, ``1e309`` and
``'1_0'``. Fed client text unchecked, each of those became a 500. The readers here return None for anything outside
the protocol's plain ASCII form or above its bound, and each caller names the field in its own 400.
"""

from __future__ import annotations

import re

#: The longest deadline a request may ask for: one hour. Longer ones are refused (400 ``bad_timeout``), so a
#: deadline is always a finite time a timer can be set for.
MAX_TIMEOUT_MS = 3_600_000
MAX_TIMEOUT_US = MAX_TIMEOUT_MS * 1000

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_MAX_DECIMAL_CHARS = 32  # far more than any honest timeout needs; keeps float() off megabyte strings


def whole_number(raw: str, maximum: int) -> int | None:
    """``raw`` as an int in 0..``maximum``; None unless it is ASCII digits only (leading zeros allowed).

    Args:
        raw: The client's text.
        maximum: The largest value the field allows.
    """
    if not raw or not (raw.isascii() and raw.isdigit()):
        return None
    significant = raw.lstrip("0") or "0"
    if len(significant) > len(str(maximum)):  # too many digits to be in range: never hand them to int()
        return None
    value = int(significant)
    return value if value <= maximum else None


def decimal_number(raw: str, maximum: float) -> float | None:
    """``raw`` as a float in 0..``maximum``; None unless it is ASCII ``digits[.digits]`` (no sign, exponent, inf).

    Args:
        raw: The client's text.
        maximum: The largest value the field allows.
    """
    if len(raw) > _MAX_DECIMAL_CHARS or not _DECIMAL.fullmatch(raw):
        return None
    value = float(raw)
    return value if value <= maximum else None
