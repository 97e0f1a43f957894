from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snn_encodings.coding import decode_icrate, encode_icrate, sigma_delta
from snn_encodings.errors import SpecError
from snn_encodings.functional import simulate
from snn_encodings.specs import ICRate

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(x=unit, steps=st.integers(min_value=1, max_value=256))
def test_sigma_delta_count_is_rounded_value(x: float, steps: int) -> None:
    spikes = sigma_delta(torch.tensor([x], dtype=torch.float64), steps)
    count = spikes.sum().item()
    assert set(spikes.flatten().tolist()) <= {0.0, 1.0}
    assert abs(count - x * steps) <= 0.5 + 1e-9
    assert count == math.floor(x * steps + 0.5)


@settings(max_examples=200, deadline=None)
@given(x=unit, steps=st.integers(min_value=1, max_value=256))
def test_sigma_delta_without_offset_is_floor(x: float, steps: int) -> None:
    count = sigma_delta(torch.tensor([x], dtype=torch.float64), steps, offset=0.0).sum().item()
    assert count == math.floor(x * steps)
    assert count >= 0


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
