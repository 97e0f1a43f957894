from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from snn_encodings.coding.radix import (
    decode_radix,
    encode_radix,
    quantise_radix,
    radix_expansion,
    steps_for_precision,
)
from snn_encodings.errors import SpecError
from snn_encodings.functional.radix import radix_twin
from snn_encodings.specs import Radix

_SPECS = st.builds(
    Radix,
    steps=st.integers(1, 8),
    base=st.sampled_from([2, 3, 4]),
    mode=st.sampled_from(["exact", "paper"]),
)


def _string(spikes: torch.Tensor) -> str:
    return "".join(str(int(s)) for s in spikes.flatten())


def test_radix_encoder_binary_setting_gives_seed_example() -> None:
    # Section IV-B: 0.78125 at leak 1/2, normalised threshold 1/2 is '11001000', error 0
    x = torch.tensor([0.78125], dtype=torch.float64)
    exact = Radix(steps=8, leak=0.5, threshold=0.5)
    assert _string(encode_radix(x, exact)) == "11001000"
    paper = Radix(steps=8, mode="paper")
    assert _string(encode_radix(x, paper).flip(0)) == "11001000"  # LSB first in time
    assert decode_radix(encode_radix(x, paper), paper).item() == 0.78125
    assert _string(radix_expansion(x, steps=8, leak=0.5, threshold=0.5)) == "11001000"


def test_radix_expansion_other_setting_underestimates() -> None:
    spec = Radix(steps=4, leak=0.3, threshold=0.6)
    x = torch.tensor([0.78125], dtype=torch.float64)
    spikes = encode_radix(x, spec)
    assert _string(spikes) == "1100"
    assert decode_radix(spikes, spec).item() < 0.78125


def test_radix_expansion_at_leak_one_is_rate_coding() -> None:
    x = torch.tensor([0.375, 0.9], dtype=torch.float64)
    spikes = radix_expansion(x, steps=10, leak=1.0, threshold=0.125)
    assert spikes.sum(0).tolist() == [3.0, 7.0]


@given(spec=_SPECS, seed=st.integers(0, 2**16))
def test_radix_round_trip_is_exact_on_the_grid(spec: Radix, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, spec.levels, (3, 5), generator=generator)
    values = codes.to(torch.float64) / spec.levels
    spikes = encode_radix(values, spec)
    assert spikes.shape == (spec.steps_per_layer, 3, 5)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(decode_radix(spikes, spec), values)
    assert torch.equal(quantise_radix(values, spec), codes)


@given(
    spec=_SPECS,
    values=st.lists(st.floats(0, 1, exclude_max=True, allow_nan=False), min_size=1, max_size=8),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
# grid values n / 3^T whose float is below n / 3^T: a plain floor(3^T x) reads them one level low
@example(spec=Radix(steps=5, base=3), values=[127 / 243], dtype=torch.float64)
@example(spec=Radix(steps=6, base=3, mode="paper"), values=[1 / 729, 2 / 729], dtype=torch.float64)
@example(spec=Radix(steps=4, base=3), values=[11 / 81, 13 / 81], dtype=torch.float32)
@example(spec=Radix(steps=5, base=3), values=[1 / 243], dtype=torch.float32)
def test_radix_encode_floors_to_the_grid(
    spec: Radix, values: list[float], dtype: torch.dtype
) -> None:
    x = torch.tensor(values, dtype=dtype)
    decoded = decode_radix(encode_radix(x, spec), spec)
    assert torch.all(decoded <= x)
    assert torch.all(x.to(torch.float64) - decoded.to(torch.float64) < spec.resolution + 1e-6)
    assert torch.equal(decode_radix(encode_radix(decoded, spec), spec), decoded)
    assert torch.equal(decoded, radix_twin(x, spec))
    assert torch.equal(radix_twin(decoded, spec), decoded)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("base", [2, 3, 4])
def test_radix_every_digit_pattern_round_trips(base: int, dtype: torch.dtype) -> None:
    # every code n < r^T for T <= 8: the value n / r^T (rounded by numpy) encodes to n's
    # base-r digits, decodes to itself, and is a fixed point of the twin
    for steps in range(1, 9):
        codes = np.arange(base**steps)
        digits = np.stack([(codes // base ** (steps - 1 - k)) % base for k in range(steps)])
        values = torch.from_numpy((codes / base**steps).astype(str(dtype).removeprefix("torch.")))
        for mode in ("exact", "paper"):
            spec = Radix(steps=steps, base=base, mode=mode)
            spikes = encode_radix(values, spec)
            counts = spikes.reshape(steps, base - 1, -1).sum(1).to(torch.int64)
            want = digits if mode == "exact" else digits[::-1].copy()
            assert torch.equal(counts, torch.from_numpy(want)), (steps, mode)
            assert torch.equal(decode_radix(spikes, spec), values), (steps, mode)
        assert torch.equal(quantise_radix(values, spec), torch.from_numpy(codes)), steps
        assert torch.equal(radix_twin(values, spec), values), steps


@given(
    steps=st.integers(1, 12),
    base=st.sampled_from([2, 3, 4]),
    leak=st.floats(0.05, 1.0),
    threshold=st.floats(0.05, 1.0),
    values=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=8),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
# a remainder that is exactly the next weight used to be lost to rounding on re-encoding
@example(steps=4, base=2, leak=0.3, threshold=0.6, values=[0.5, 0.3, 0.25], dtype=torch.float64)
@example(steps=8, base=2, leak=0.7, threshold=0.5, values=[0.3], dtype=torch.float64)
def test_radix_expansion_decode_after_encode_is_idempotent(
    steps: int, base: int, leak: float, threshold: float, values: list[float], dtype: torch.dtype
) -> None:
    spec = Radix(steps=steps, base=base, leak=leak, threshold=threshold)
    x = torch.tensor(values, dtype=dtype)
    spikes = encode_radix(x, spec)
    decoded = decode_radix(spikes, spec)
    assert torch.all(decoded <= x)
    assert torch.equal(encode_radix(decoded, spec), spikes)


def test_radix_encoder_saturates_or_raises_at_one() -> None:
    spec = Radix(steps=3)
    x = torch.tensor([1.0, 7.0])
    assert decode_radix(encode_radix(x, spec), spec).tolist() == [0.875, 0.875]
    with pytest.raises(SpecError, match="must be < 1"):
        encode_radix(x, spec, overflow="raise")
    with pytest.raises(SpecError, match="overflow must be"):
        encode_radix(x, spec, overflow="wrap")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "fragment"),
    [
        (torch.tensor([0.5, math.nan]), "NaN"),
        (torch.tensor([0.5, -0.1]), "must be >= 0"),
        (torch.tensor([1, 0]), "floating-point"),
    ],
)
def test_radix_encoder_rejects_bad_values(x, fragment) -> None:
    with pytest.raises(SpecError, match=fragment):
        encode_radix(x, Radix(steps=3))


def test_radix_encoder_rejects_too_few_steps_for_precision() -> None:
    with pytest.raises(SpecError, match="use steps >= 7"):
        encode_radix(torch.tensor([0.5]), Radix(steps=4), precision=0.01)
    assert encode_radix(torch.tensor([0.5]), Radix(steps=7), precision=0.01).shape == (7, 1)
    assert steps_for_precision(2**-16) == 16


def test_radix_decoder_rejects_wrong_window() -> None:
    with pytest.raises(SpecError, match="expected 6 time steps"):
        decode_radix(torch.zeros(3, 2), Radix(steps=3, base=3))


def test_radix_base_three_sends_digits_as_spike_counts() -> None:
    spec = Radix(steps=2, base=3)
    spikes = encode_radix(torch.tensor([7 / 9], dtype=torch.float64), spec)  # digits 2, 1
    assert spikes.flatten().tolist() == [1.0, 1.0, 1.0, 0.0]
