"""The shared grid mapping: exhaustive for small grids, Hypothesis beyond.

The reference is numpy: boundaries :math:`(n - s)/K` divided in float64 and cast to the dtype,
and ``searchsorted`` for the largest boundary below each value; it shares no code with
:mod:`snn_encodings.functional.grid`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from snn_encodings.coding import decode_quartz, decode_radix, encode_quartz, encode_radix
from snn_encodings.conversion.twin import clip_quant
from snn_encodings.errors import SpecError
from snn_encodings.functional.grid import grid_index, grid_quantise, grid_value
from snn_encodings.specs import Quartz, Radix

DTYPES = (torch.float32, torch.float64)
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _reference(x: torch.Tensor, levels: int, shift: float, low: int, high: int) -> torch.Tensor:
    """max{n in [low, high] : float((n - shift)/K) <= x}, by numpy searchsorted."""
    n = np.arange(low, high + 1, dtype=np.float64)
    bounds = ((n - shift) / levels).astype(_NUMPY[x.dtype])
    found = np.searchsorted(bounds, x.numpy(), side="right") - 1 + low
    return torch.from_numpy(np.clip(found, low, high).astype(np.int64))


def _neighbours(values: torch.Tensor) -> torch.Tensor:
    """The values and the floats just below and above each."""
    below = torch.nextafter(values, torch.full_like(values, -np.inf))
    above = torch.nextafter(values, torch.full_like(values, np.inf))
    return torch.cat([values, below, above])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_every_grid_value_maps_back_to_its_index(dtype: torch.dtype, shift: float) -> None:
    # all K in 1..256: index(value(n)) == n for every n in [0, K], both rounding modes
    for levels in range(1, 257):
        n = torch.arange(levels + 1)
        value = torch.from_numpy((n.numpy() / levels).astype(_NUMPY[dtype]))
        assert torch.equal(grid_value(n, levels, dtype), value)
        assert torch.equal(grid_index(value, levels, low=0, high=levels, shift=shift), n), levels


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shift", [0.0, 0.5, 0.3])
def test_index_is_the_largest_boundary_below_on_small_grids(
    dtype: torch.dtype, shift: float
) -> None:
    generator = torch.Generator().manual_seed(0)
    for levels in range(1, 65):
        grid = torch.arange(-1, levels + 2, dtype=torch.float64)
        points = torch.cat([grid / levels, (grid - shift) / levels]).to(dtype)
        x = torch.cat(
            [_neighbours(points), torch.rand(256, generator=generator, dtype=dtype) * 1.2 - 0.1]
        )
        got = grid_index(x, levels, low=0, high=levels, shift=shift)
        assert torch.equal(got, _reference(x, levels, shift, 0, levels)), levels


@given(
    levels=st.integers(1, 2**40),
    x=st.floats(-0.5, 1.5, allow_nan=False),
    shift=st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.99),
    dtype=st.sampled_from([*DTYPES, torch.float16, torch.bfloat16]),
)
@example(levels=26, x=0.59375, shift=0.0, dtype=torch.float64)
@example(levels=26, x=15 / 26, shift=0.0, dtype=torch.float64)
@example(levels=3**25, x=1 / 3, shift=0.0, dtype=torch.float32)
@example(levels=2**40, x=1 - 2**-24, shift=0.0, dtype=torch.float32)
@example(levels=26, x=0.59375, shift=0.0, dtype=torch.float16)
@example(levels=3**10, x=0.3, shift=0.0, dtype=torch.bfloat16)
def test_decode_after_encode_is_idempotent(
    levels: int, x: float, shift: float, dtype: torch.dtype
) -> None:
    # a non-zero shift needs a dtype that separates n/K from (n + 1 - shift)/K
    assume(shift == 0.0 or dtype == torch.float64 or (dtype == torch.float32 and levels <= 2**16))
    value = torch.tensor([x], dtype=dtype)
    once = grid_quantise(value, levels, low=0, high=levels, shift=shift)
    twice = grid_quantise(once, levels, low=0, high=levels, shift=shift)
    assert torch.equal(once, twice)
    floor = grid_quantise(value, levels, low=0, high=levels)
    assert floor.item() <= value.item() or x < 0


@given(
    levels=st.integers(1, 2**40),
    fraction=st.floats(0.0, 1.0),
    shift=st.sampled_from([0.0, 0.5]),
)
@example(levels=26, fraction=15 / 26, shift=0.0)
@example(levels=3**8, fraction=0.5, shift=0.0)
def test_float64_grid_values_map_back_to_their_index(
    levels: int, fraction: float, shift: float
) -> None:
    n = torch.tensor([int(fraction * levels)])
    value = torch.tensor([n.item() / levels], dtype=torch.float64)  # Python's rounded division
    assert torch.equal(grid_index(value, levels, low=0, high=levels, shift=shift), n)


def test_values_outside_the_range_saturate() -> None:
    x = torch.tensor([-1e30, -0.4, 0.4, 1e30], dtype=torch.float64)
    assert grid_index(x, 4, low=0, high=3).tolist() == [0, 0, 1, 3]
    assert grid_index(x.float(), 2**40, low=-5, high=7).tolist() == [-5, -5, 7, 7]


def test_quantise_keeps_nan() -> None:
    out = grid_quantise(torch.tensor([float("nan"), 0.3]), 4, low=0, high=4)
    assert torch.isnan(out[0]) and out[1].item() == 0.25


def test_grid_index_rejects_bad_arguments() -> None:
    with pytest.raises(SpecError, match="float tensor"):
        grid_index(torch.tensor([1]), 4, low=0, high=4)
    with pytest.raises(SpecError, match="levels >= 1"):
        grid_index(torch.tensor([0.5]), 0, low=0, high=4)
    with pytest.raises(SpecError, match="low <= high"):
        grid_index(torch.tensor([0.5]), 4, low=3, high=2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shift", [0.0, 0.5, 0.25])
def test_clip_quant_twin_is_idempotent_on_small_grids(dtype: torch.dtype, shift: float) -> None:
    generator = torch.Generator().manual_seed(1)
    for levels in range(1, 65):
        z = torch.cat(
            [
                grid_value(torch.arange(-2, levels + 3), levels, dtype),
                torch.rand(128, generator=generator, dtype=dtype) * 1.4 - 0.2,
            ]
        )
        once = clip_quant(z, levels, shift)
        assert torch.equal(clip_quant(once, levels, shift), once), levels
        inside = (z >= 0) & (z <= 1)
        want = grid_quantise(z[inside], levels, low=0, high=levels, shift=shift)
        assert torch.equal(once[inside], want), levels


def _twin_and_grid(spec: Quartz | Radix) -> tuple[int, float, float, torch.Tensor]:
    """``(levels, shift, upper)`` of the spec's clip_quant twin and its grid indices."""
    if isinstance(spec, Quartz):
        shift = 0.5 if spec.rounding == "round" else 0.0
        return spec.t_max, shift, 1.0, torch.arange(spec.t_max + 1)
    return spec.levels, 0.0, 1.0 - 1.0 / spec.levels, torch.arange(spec.levels)


def _encode_decode(x: torch.Tensor, spec: Quartz | Radix) -> torch.Tensor:
    if isinstance(spec, Quartz):
        return decode_quartz(encode_quartz(x, spec), spec)
    return decode_radix(encode_radix(x, spec), spec)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "spec",
    [Quartz(t_max=26, rounding="floor"), Quartz(t_max=23), Radix(steps=5, base=3), Radix(steps=4)],
    ids=repr,
)
def test_fine_tuning_twin_maps_values_as_the_encoder(
    spec: Quartz | Radix, dtype: torch.dtype
) -> None:
    # the clip_quant twin (ClipQuant, fine-tuning) and encode -> decode agree on every input
    levels, shift, upper, grid = _twin_and_grid(spec)
    values = grid_value(grid, levels, dtype)
    generator = torch.Generator().manual_seed(2)
    x = torch.cat([_neighbours(values), torch.rand(512, generator=generator, dtype=dtype)])
    x = x.clamp(0.0, values.max().item())
    assert torch.equal(clip_quant(x, levels, shift, upper), _encode_decode(x, spec))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bits", [0, 3, 10, 20])
@pytest.mark.parametrize(
    ("shift", "high"),
    [(0.0, None), (0.0, 2**24 - 1), (0.0, 2**24), (0.5, None), (0.5, 2**22 - 1), (0.5, 2**22)],
)
def test_power_of_two_grids_match_the_exact_rational_floor(
    dtype: torch.dtype, bits: int, shift: float, high: int | None
) -> None:
    # power-of-two K, every boundary (n - s)/K held exactly by the dtype: the index is
    # floor(K x + s) of the exact rational x, clamped. Narrow ranges take the direct floor,
    # the widest of each shift the general path: both must give the same indices.
    levels, low = 2**bits, -3
    high = levels + 1 if high is None else high
    generator = torch.Generator().manual_seed(bits)
    n = torch.randint(low - 2, high + 3, (64,), generator=generator).to(torch.float64)
    points = torch.cat([n / levels, (n - shift) / levels]).to(dtype)
    x = torch.cat(
        [
            _neighbours(points),
            torch.rand(64, generator=generator, dtype=dtype) * 1.4 - 0.2,
            torch.tensor([-1e30, -0.0, 1e-40, 1e30], dtype=torch.float64).to(dtype),
        ]
    )
    expected = [
        min(max(math.floor(Fraction(value) * levels + Fraction(shift)), low), high)
        for value in x.tolist()
    ]
    assert grid_index(x, levels, low=low, high=high, shift=shift).tolist() == expected


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("exponent", [1, 8, 20, 40, 49])
def test_rounding_on_large_power_of_two_grids_next_to_the_half_boundaries(
    dtype: torch.dtype, exponent: int
) -> None:
    """Shift 1/2 on K = 2**e: the floats on, just below and just above (2n - 1)/2K map to the
    exact floor(Kx + 1/2) (computed with fractions), where Kx + 1/2 in floats could round up."""
    bits = 24 if dtype == torch.float32 else 53
    if exponent + 2 > bits - 2:
        pytest.skip("the grid's half boundaries are not exact in this dtype")
    levels = 2**exponent
    generator = torch.Generator().manual_seed(exponent)
    n = torch.randint(0, levels, (64,), generator=generator, dtype=torch.int64)
    boundaries = ((n.to(torch.float64) - 0.5) / levels).to(dtype)
    x = _neighbours(boundaries)
    got = grid_index(x, levels, low=0, high=levels, shift=0.5)
    expected = [
        min(max(math.floor(Fraction(float(v)) * levels + Fraction(1, 2)), 0), levels)
        for v in x.tolist()
    ]
    assert got.tolist() == expected
