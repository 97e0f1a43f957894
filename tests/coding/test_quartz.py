from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snn_encodings.coding import decode_quartz, encode_quartz, quantise_quartz
from snn_encodings.errors import SpecError
from snn_encodings.specs import Quartz

_values = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=20)


@settings(max_examples=50, deadline=None)
@given(values=_values, t_max=st.integers(2, 40), rounding=st.sampled_from(["round", "floor"]))
def test_quartz_encode_decode_round_trips_to_grid(values, t_max, rounding) -> None:
    spec = Quartz(t_max=t_max, rounding=rounding)
    x = torch.tensor(values, dtype=torch.float64)
    spikes = encode_quartz(x, spec)
    assert spikes.shape == (4 * t_max, len(values))
    assert torch.equal(spikes.sum(0), torch.ones_like(x))
    decoded = decode_quartz(spikes, spec)
    assert torch.equal(decoded, quantise_quartz(x, spec))
    step = 0.5 / t_max if rounding == "round" else 1.0 / t_max
    assert ((decoded - x).abs() <= step + 1e-12).all()
    assert torch.equal(decode_quartz(encode_quartz(decoded, spec), spec), decoded)


def test_quartz_encode_places_spikes_at_two_k_minus_level() -> None:
    spec = Quartz(t_max=4)
    spikes = encode_quartz(torch.tensor([[1.0, 0.75, 0.5, 0.0]]), spec)
    assert spikes.argmax(0).tolist() == [[4, 5, 6, 8]]
    floor = Quartz(t_max=4, rounding="floor")
    assert encode_quartz(torch.tensor([0.49]), floor).argmax(0).tolist() == [7]
    assert encode_quartz(torch.tensor([0.49]), spec).argmax(0).tolist() == [6]


def test_quartz_decode_silent_neuron_reads_minus_one() -> None:
    spec = Quartz(t_max=4)
    spikes = torch.zeros(16, 2)
    spikes[15, 1] = 1.0
    assert decode_quartz(spikes, spec).tolist() == [-1.0, -1.0]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(-0.1, "must be >= 0"), (1.5, "must be <= 1"), (math.nan, "NaN or inf")],
)
def test_quartz_encode_rejects_out_of_range(value, fragment) -> None:
    with pytest.raises(SpecError, match=fragment):
        encode_quartz(torch.tensor([value]), Quartz(t_max=4))


def test_quartz_encode_clips_when_asked() -> None:
    spec = Quartz(t_max=4, clip_inputs=True)
    spikes = encode_quartz(torch.tensor([-0.5, 1.5]), spec)
    assert decode_quartz(spikes, spec).tolist() == [0.0, 1.0]
    with pytest.raises(SpecError, match="NaN or inf"):
        encode_quartz(torch.tensor([math.nan]), spec)
