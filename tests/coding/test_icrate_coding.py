from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from snn_encodings.coding import decode_icrate, encode_icrate, sigma_delta
from snn_encodings.errors import SpecError
from snn_encodings.functional import simulate
from snn_encodings.specs import ICRate

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def _largest_boundary_below(x: float, steps: int, offset: float) -> int:
    """max{n in [0, T] : float((n - offset)/T) <= x}: Python's correctly rounded division."""
    return max(n for n in range(steps + 1) if n == 0 or (n - offset) / steps <= x)


# grid values c/T whose float is below c/T (a plain floor(T x) loses a count there)
@given(x=unit, steps=st.integers(min_value=1, max_value=256))
@example(x=15 / 26, steps=26)
@example(x=31 / 39, steps=39)
def test_sigma_delta_count_is_rounded_value(x: float, steps: int) -> None:
    spikes = sigma_delta(torch.tensor([x], dtype=torch.float64), steps)
    count = spikes.sum().item()
    assert set(spikes.flatten().tolist()) <= {0.0, 1.0}
    assert abs(count - x * steps) <= 0.5 + 1e-9
    assert count == _largest_boundary_below(x, steps, 0.5)


@given(x=unit, steps=st.integers(min_value=1, max_value=256))
@example(x=15 / 26, steps=26)
@example(x=15 / 22, steps=22)
def test_sigma_delta_without_offset_is_floor(x: float, steps: int) -> None:
    count = sigma_delta(torch.tensor([x], dtype=torch.float64), steps, offset=0.0).sum().item()
    assert count == _largest_boundary_below(x, steps, 0.0)
    assert count == math.floor(Fraction(x) * steps) or count / steps == x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_sigma_delta_every_count_round_trips(dtype: torch.dtype, offset: float) -> None:
    # all T in 1..36 and every count c in [0, T]: the value c/T (rounded by numpy) is sent as
    # exactly c binary spikes, so reading it back as c/T and re-encoding changes nothing
    for steps in range(1, 37):
        counts = np.arange(steps + 1)
        values = torch.from_numpy((counts / steps).astype(str(dtype).removeprefix("torch.")))
        spikes = sigma_delta(values, steps, offset=offset)
        assert ((spikes == 0) | (spikes == 1)).all(), steps
        assert torch.equal(spikes.sum(0).to(torch.int64), torch.from_numpy(counts)), steps


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(float("nan"), "NaN"), (-0.1, ">= 0"), (1.5, "<= 1"), (float("inf"), "NaN or inf")],
)
def test_sigma_delta_rejects_bad_values(value: float, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        sigma_delta(torch.tensor([value]), 8)


def test_sigma_delta_rejects_bad_steps() -> None:
    with pytest.raises(SpecError, match="steps"):
        sigma_delta(torch.tensor([0.5]), 0)


def test_encode_icrate_analog_repeats_input() -> None:
    x = torch.rand(2, 3)
    out = encode_icrate(x, ICRate(steps=4))
    assert out.shape == (4, 2, 3) and torch.equal(out[3], x)


def test_compensated_decode_recovers_mean_current() -> None:
    spec = ICRate(steps=10, init="ann", compensate=True)
    currents = torch.rand(10, 5, dtype=torch.float64) * 1.4 - 0.2
    out = simulate(spec, currents)
    decoded = decode_icrate(out.spikes, spec, v_final=out.state.v)
    torch.testing.assert_close(decoded, currents.mean(0))


def test_uncompensated_decode_is_rate() -> None:
    spec = ICRate(steps=4, compensate=False)
    spikes = torch.tensor([[1.0], [0.0], [1.0], [1.0]])
    assert decode_icrate(spikes, spec).tolist() == [0.75]


def test_compensated_decode_needs_final_membrane() -> None:
    with pytest.raises(SpecError, match="v_final"):
        decode_icrate(torch.zeros(3, 1), ICRate(compensate=True))
