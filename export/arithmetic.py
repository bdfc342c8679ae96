"""Convolution arithmetic: out = (W − F_eff + 2P)/S + 1 with F_eff = D·(F − 1) + 1, as PyTorch defines dilation.

Pure integer maths, no torch: used by ``python -m export shape`` and by the per-layer check of every export.
In strict mode a combination that does not tile its input is an error that names the numbers and suggests fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


class ShapeError(ValueError):
    """A layer whose arithmetic is impossible (filter larger than input) or, in strict mode, non-integral."""


@dataclass(frozen=True)
class Arithmetic:
    """One application of the formula along one spatial axis."""

    size: int
    kernel: int
    padding: int
    stride: int
    dilation: int
    exact: Fraction  # (W − F_eff + 2P)/S + 1 before rounding
    output: int  # after rounding (equal to exact when integral)

    @property
    def integral(self) -> bool:
        """True when the filter tiles the padded input exactly."""
        return self.exact.denominator == 1

    def formula(self) -> str:
        """The formula with the numbers filled in, for messages and reports."""
        f_eff = self.dilation * (self.kernel - 1) + 1
        dil = f" (F_eff = {self.dilation}·({self.kernel} − 1) + 1 = {f_eff})" if self.dilation != 1 else ""
        return (
            f"(W − F + 2P)/S + 1 = ({self.size} − {f_eff} + 2·{self.padding})/{self.stride} + 1 = "
            f"{_fmt(self.exact)}{dil}"
        )


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


def compute(
    size: int,
    kernel: int,
    padding: int = 0,
    stride: int = 1,
    dilation: int = 1,
    *,
    strict: bool = True,
    ceil_mode: bool = False,
) -> Arithmetic:
    """Apply the convolution arithmetic along one axis.

    Args:
        size: input extent W (or H).
        kernel: filter extent F.
        padding: zero padding P on each side.
        stride: step S.
        dilation: spacing D between filter taps (1 = dense).
        strict: reject a non-integral result instead of rounding it.
        ceil_mode: round up as PyTorch pooling with ``ceil_mode=True`` does (floor otherwise).

    Returns:
        The exact and rounded output size.

    Raises:
        ShapeError: on non-positive arguments, a filter larger than the padded input, or (strict) a
            non-integral result; the message suggests paddings and strides that tile.
    """
    for label, value, minimum in (("W", size, 1), ("F", kernel, 1), ("P", padding, 0), ("S", stride, 1)):
        if value < minimum:
            raise ShapeError(f"{label}={value} is invalid: expected {label} >= {minimum}")
    if dilation < 1:
        raise ShapeError(f"D={dilation} is invalid: expected D >= 1")
    f_eff = dilation * (kernel - 1) + 1
    span = size - f_eff + 2 * padding
    if span < 0:
        raise ShapeError(
            f"W={size}, F={kernel}, P={padding}, S={stride}, D={dilation}: the effective filter ({f_eff}) is larger "
            f"than the padded input ({size + 2 * padding}); use a smaller filter or more padding"
        )
    exact = Fraction(span, stride) + 1
    if exact.denominator == 1:
        return Arithmetic(size, kernel, padding, stride, dilation, exact, int(exact))
    if strict:
        result = Arithmetic(size, kernel, padding, stride, dilation, exact, int(exact))
        raise ShapeError(f"{_describe(result)} is not an integer: {_suggest(size, kernel, padding, stride, dilation)}")
    output = span // stride + 1
    if ceil_mode:
        output += 1
        # PyTorch drops a last window that would start inside the right padding only.
        if (output - 1) * stride >= size + padding:
            output -= 1
    return Arithmetic(size, kernel, padding, stride, dilation, exact, output)


def _describe(a: Arithmetic) -> str:
    dil = f", D={a.dilation}" if a.dilation != 1 else ""
    return f"W={a.size}, F={a.kernel}, P={a.padding}, S={a.stride}{dil}: {a.formula()}"


def _suggest(size: int, kernel: int, padding: int, stride: int, dilation: int) -> str:
    """Nearby paddings and strides that tile the input, and what floor rounding would give."""
    f_eff = dilation * (kernel - 1) + 1
    paddings = [p for p in range(0, f_eff + 1) if size - f_eff + 2 * p >= 0 and (size - f_eff + 2 * p) % stride == 0]
    strides = [s for s in range(1, max(stride, f_eff) + 1) if (size - f_eff + 2 * padding) % s == 0]
    parts = []
    if paddings:
        parts.append(
            "padding "
            + " or ".join(f"P={p} (out {(size - f_eff + 2 * p) // stride + 1})" for p in paddings[:3])
            + f" with S={stride}"
        )
    if strides:
        parts.append(
            "stride "
            + " or ".join(f"S={s} (out {(size - f_eff + 2 * padding) // s + 1})" for s in strides[-3:])
            + f" with P={padding}"
        )
    floor_out = (size - f_eff + 2 * padding) // stride + 1
    parts.append(f"or accept PyTorch's floor rounding (out {floor_out}: --floor, or --rounding floor when exporting)")
    return "use " + "; ".join(parts)
