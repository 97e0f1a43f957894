"""``all_finite``: the cheap NaN/inf test behind every input check."""

from __future__ import annotations

import math

import pytest
import torch

from snn_encodings.functional.finite import all_finite


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_any_nan_or_inf_element_is_found(dtype, bad):
    x = torch.rand(3, 50, dtype=torch.float64).to(dtype)
    assert all_finite(x)
    for index in (0, 77, 149):
        y = x.clone()
        y.view(-1)[index] = bad
        assert not all_finite(y), (index, bad)


def test_opposite_infinities_do_not_cancel():
    assert not all_finite(torch.tensor([math.inf, -math.inf, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_finite_values_whose_sum_overflows_are_finite(dtype):
    big = torch.finfo(dtype).max
    x = torch.full((4,), big, dtype=dtype)
    assert not torch.isfinite(x.sum())  # the fast path alone would say no
    assert all_finite(x)


def test_empty_tensor_is_finite():
    assert all_finite(torch.empty(0, 3))
