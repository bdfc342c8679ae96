"""Convolution arithmetic against PyTorch's own Conv2d / MaxPool2d / AvgPool2d output shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from export.arithmetic import ShapeError, compute


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 64),
    f=st.integers(1, 11),
    p=st.integers(0, 5),
    s=st.integers(1, 5),
    d=st.integers(1, 3),
)
def test_floor_mode_matches_conv2d(w: int, f: int, p: int, s: int, d: int) -> None:
    conv = nn.Conv2d(1, 1, kernel_size=f, padding=p, stride=s, dilation=d)
    if w + 2 * p < d * (f - 1) + 1:
        with pytest.raises(ShapeError, match="larger than the padded input"):
            compute(w, f, p, s, d, strict=False)
        return
    with torch.no_grad():
        actual = conv(torch.zeros(1, 1, w, w)).shape[-1]
    assert compute(w, f, p, s, d, strict=False).output == actual


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 64),
    f=st.integers(1, 7),
    s=st.integers(1, 4),
    d=st.integers(1, 2),
    ceil=st.booleans(),
    data=st.data(),
)
def test_pooling_matches_maxpool2d(w: int, f: int, s: int, d: int, ceil: bool, data: st.DataObject) -> None:
    p = data.draw(st.integers(0, f // 2))  # PyTorch requires padding <= kernel/2
    if w + 2 * p < d * (f - 1) + 1:
        return
    pool = nn.MaxPool2d(kernel_size=f, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    actual = pool(torch.zeros(1, 1, w, w)).shape[-1]
    assert compute(w, f, p, s, d, strict=False, ceil_mode=ceil).output == actual


@settings(max_examples=80, deadline=None)
@given(w=st.integers(2, 48), f=st.integers(1, 6), s=st.integers(1, 4), ceil=st.booleans(), data=st.data())
def test_pooling_matches_avgpool2d(w: int, f: int, s: int, ceil: bool, data: st.DataObject) -> None:
    p = data.draw(st.integers(0, f // 2))
    if w + 2 * p < f:
        return
    pool = nn.AvgPool2d(kernel_size=f, stride=s, padding=p, ceil_mode=ceil)
    assert compute(w, f, p, s, strict=False, ceil_mode=ceil).output == pool(torch.zeros(1, 1, w, w)).shape[-1]


@settings(max_examples=100, deadline=None)
@given(w=st.integers(1, 64), f=st.integers(1, 9), p=st.integers(0, 4), s=st.integers(1, 4), d=st.integers(1, 3))
def test_strict_mode_accepts_exactly_the_integral_cases(w: int, f: int, p: int, s: int, d: int) -> None:
    span = w + 2 * p - (d * (f - 1) + 1)
    if span < 0:
        return
    if span % s == 0:
        assert compute(w, f, p, s, d).output == span // s + 1
    else:
        with pytest.raises(ShapeError, match="is not an integer"):
            compute(w, f, p, s, d)


def test_course_examples() -> None:
    assert compute(227, 11, 0, 4).output == 55  # AlexNet CONV1
    assert compute(224, 3, 1, 1).output == 224  # VGG 3x3 pad 1 keeps size
    assert compute(32, 5, 2, 1).output == 32
    assert compute(7, 3, 0, 2).output == 3
    assert compute(32, 3, 0, 1, dilation=2).output == 28  # F_eff = 5


def test_non_integral_message_names_numbers_and_suggests_fixes() -> None:
    with pytest.raises(ShapeError) as info:
        compute(10, 3, 0, 2)
    message = str(info.value)
    assert "W=10, F=3, P=0, S=2" in message
    assert "4.5 is not an integer" in message
    assert "S=1 (out 8)" in message
    assert "floor rounding (out 4" in message


def test_suggests_padding_when_one_fits() -> None:
    # (10 − 3 + 0)/3 + 1 = 3.33…; with P=1: (10 − 3 + 2)/3 + 1 = 4
    with pytest.raises(ShapeError, match=r"padding P=1 \(out 4\) with S=3"):
        compute(10, 3, 0, 3)
