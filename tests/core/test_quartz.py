from __future__ import annotations

import math

import pytest
import torch

from snn_encodings.errors import SpecError
from snn_encodings.functional import (
    quartz_first_spikes,
    quartz_initial_state,
    quartz_step,
    simulate,
)
from snn_encodings.specs import Quartz


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"t_max": 1}, "Quartz.t_max"),
        ({"t_max": 4.0}, "Quartz.t_max"),
        ({"t_max": True}, "Quartz.t_max"),
        ({"rounding": "ceil"}, "Quartz.rounding"),
        ({"mode": "literal"}, "Quartz.mode"),
        ({"percentile": 0.0}, "Quartz.percentile"),
        ({"percentile": 100.5}, "Quartz.percentile"),
        ({"percentile": math.nan}, "Quartz.percentile"),
        ({"weight_frac_bits": -1}, "Quartz.weight_frac_bits"),
        ({"weight_frac_bits": 41}, "Quartz.weight_frac_bits"),
        ({"rectify": 1}, "Quartz.rectify"),
        ({"analytic": "yes"}, "Quartz.analytic"),
    ],
)
def test_quartz_spec_rejects_bad_fields(kwargs, fragment) -> None:
    with pytest.raises(SpecError, match=fragment):
        Quartz(**kwargs)


def test_quartz_spec_window_numbers() -> None:
    spec = Quartz(t_max=16)
    assert (spec.steps_per_layer, spec.layer_latency) == (64, 16)
    assert (spec.read_step, spec.rectify_step, spec.threshold) == (32, 48, 16.5)
    assert Quartz(t_max=16, rounding="floor").threshold == 17.0


def _run(spec: Quartz, currents: list[float], **overrides) -> tuple[list[int], list[float]]:
    state = quartz_initial_state(spec, torch.zeros(1, dtype=torch.float64))
    spikes, membranes = [], []
    for current in currents:
        s, state = quartz_step(
            torch.tensor([current], dtype=torch.float64), state, spec, **overrides
        )
        spikes.append(int(s.item()))
        membranes.append(state.v.item())
    return spikes, membranes


def test_quartz_step_matches_hand_trace_two_inputs() -> None:
    # K = 4, theta = 4.5. Inputs x1 = 3/4 (w = 1, at step 8 - 3 = 5) and x2 = 1/4 (w = -1, at
    # step 7): z = 1/2, v(8) = Kz + 1 = 3, then +1 per step: 4 at 9, 5 at 10 -> spike at 10
    # = 3K - round(Kz) = 12 - 2.
    spec = Quartz(t_max=4)
    currents = [0.0] * 16
    currents[5] += 1.0
    currents[7] -= 1.0
    spikes, v = _run(spec, currents)
    assert spikes == [0] * 10 + [1] + [0] * 5
    # i: 1 at 5, 6; 0 at 7; readout 1 at 8; so v = 1, 2, 2, 3, 4 over steps 5..9
    assert v[:10] == [0, 0, 0, 0, 0, 1, 2, 2, 3, 4]
    assert v[10:] == [0] * 6


def test_quartz_step_rectifier_forces_zero_spike() -> None:
    # x = 1/4 on weight -1: z = -1/4, v(8) = 0, ramps to 4 at step 12 < 4.5 -> forced at 3K = 12.
    spec = Quartz(t_max=4)
    currents = [0.0] * 16
    currents[7] = -1.0
    spikes, _ = _run(spec, currents)
    assert spikes == [0] * 12 + [1, 0, 0, 0]
    spikes, _ = _run(spec, currents, rectify=False)
    assert spikes == [0] * 13 + [1, 0, 0]  # v(8) = 0 -> crosses 4.5 at 8 + 5


def test_quartz_step_paper_mode_fires_once_and_early() -> None:
    # Two inputs of weight 3 at step 4 (x = 1) cross theta during the encode phase.
    spec = Quartz(t_max=4, mode="paper")
    currents = [0.0] * 16
    currents[4] = 3.0
    currents[6] = -3.0
    spikes, _ = _run(spec, currents)
    assert spikes == [0] * 5 + [1] + [0] * 10  # v = 3, 6 -> early spike at 5, then silent


def test_quartz_step_exact_mode_holds_the_spike_until_the_readout() -> None:
    # Same inputs: v = 3, 6, 6, 6 before the readout; held, then v(8) = 7 >= 4.5 fires at 2K
    # (value 1, the twin's clipped value), once.
    spec = Quartz(t_max=4)
    assert spec.mode == "exact" and spec.first_fire_step == spec.read_step == 8
    currents = [0.0] * 16
    currents[4] = 3.0
    currents[6] = -3.0
    spikes, v = _run(spec, currents)
    assert spikes == [0] * 8 + [1] + [0] * 7
    assert v[:8] == [0, 0, 0, 0, 3, 6, 6, 6]


def test_quartz_step_rejects_shape_change() -> None:
    spec = Quartz(t_max=4)
    state = quartz_initial_state(spec, torch.zeros(2))
    with pytest.raises(SpecError, match="reset the state"):
        quartz_step(torch.zeros(3), state, spec)


@pytest.mark.parametrize("rectify", [True, False])
@pytest.mark.parametrize(
    "spec",
    [Quartz(t_max=4), Quartz(t_max=4, mode="paper"), Quartz(t_max=5, rounding="floor")],
    ids=repr,
)
def test_quartz_first_spikes_equals_simulation(spec, rectify) -> None:
    generator = torch.Generator().manual_seed(0)
    # dyadic currents (multiples of 1/64), signed, sparse in time like weighted spikes
    raw = torch.randint(-64, 65, (spec.steps_per_layer, 6, 50), generator=generator)
    mask = torch.rand(raw.shape, generator=generator) < 0.15
    currents = (raw * mask).to(torch.float64) / 64
    want = simulate(spec, currents, rectify=rectify)
    spikes, state = quartz_first_spikes(currents, spec, rectify=rectify)
    assert torch.equal(spikes, want.spikes)
    assert spikes.sum(0).max() <= 1
    for got_field, want_field in zip(state, want.state):
        assert torch.equal(got_field, want_field)
    if rectify:
        assert torch.equal(spikes.sum(0), torch.ones_like(spikes[0]))
