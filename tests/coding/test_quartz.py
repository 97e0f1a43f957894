from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from snn_encodings.coding import decode_quartz, encode_quartz, quantise_quartz
from snn_encodings.errors import SpecError
from snn_encodings.specs import Quartz

_values = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=20)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# Explicit examples: every input that has made this test fail, and grid values n/K whose float
# is below n/K, so a plain floor(K x) reads them one level low (float64 and float32 siblings).
@given(
    values=_values,
    t_max=st.integers(2, 40),
    rounding=st.sampled_from(["round", "floor"]),
    dtype=st.sampled_from(sorted(_DTYPES)),
)
@example(values=[0.59375], t_max=26, rounding="floor", dtype="float64")
@example(values=[0.59375], t_max=26, rounding="floor", dtype="float32")
@example(values=[15 / 22], t_max=22, rounding="floor", dtype="float64")
@example(values=[13 / 23], t_max=23, rounding="floor", dtype="float64")
@example(values=[31 / 39], t_max=39, rounding="floor", dtype="float64")
@example(values=[13 / 22], t_max=22, rounding="floor", dtype="float32")
@example(values=[7 / 23, 14 / 23], t_max=23, rounding="floor", dtype="float32")
@example(values=[15 / 29], t_max=29, rounding="floor", dtype="float32")
@example(values=[3 / 37], t_max=37, rounding="floor", dtype="float32")
@example(values=[27 / 38], t_max=38, rounding="floor", dtype="float32")
@example(values=[0.59375], t_max=26, rounding="round", dtype="float64")
def test_quartz_encode_decode_round_trips_to_grid(values, t_max, rounding, dtype) -> None:
    spec = Quartz(t_max=t_max, rounding=rounding)
    x = torch.tensor(values, dtype=_DTYPES[dtype])
    spikes = encode_quartz(x, spec)
    assert spikes.shape == (4 * t_max, len(values))
    assert torch.equal(spikes.sum(0), torch.ones_like(x))
    decoded = decode_quartz(spikes, spec)
    assert torch.equal(decoded, quantise_quartz(x, spec))
    step = 0.5 / t_max if rounding == "round" else 1.0 / t_max
    error = (decoded.to(torch.float64) - x.to(torch.float64)).abs()
    assert (error <= step + 1e-6).all()
    assert torch.equal(decode_quartz(encode_quartz(decoded, spec), spec), decoded)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("rounding", ["round", "floor"])
def test_quartz_every_grid_value_round_trips(dtype: torch.dtype, rounding: str) -> None:
    # all t_max up to 64, every level n in [0, K]: the value n/K (rounded by numpy, not by the
    # library) encodes to a spike at 2K - n, and decodes to itself
    for t_max in range(2, 65):
        spec = Quartz(t_max=t_max, rounding=rounding)  # type: ignore[arg-type]
        levels = np.arange(t_max + 1)
        values = torch.from_numpy((levels / t_max).astype(str(dtype).removeprefix("torch.")))
        spikes = encode_quartz(values, spec)
        assert spikes.argmax(0).tolist() == (2 * t_max - levels).tolist(), t_max
        assert torch.equal(decode_quartz(spikes, spec), values), t_max
        assert torch.equal(quantise_quartz(values, spec), values), t_max


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
