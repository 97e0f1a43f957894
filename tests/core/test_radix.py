from __future__ import annotations

import math

import pytest
import torch

from snn_encodings.coding.radix import decode_radix
from snn_encodings.errors import SpecError
from snn_encodings.functional import neuron_functions, simulate
from snn_encodings.functional.radix import (
    radix_initial_state,
    radix_step,
    radix_twin,
    radix_twin_parameters,
)
from snn_encodings.specs import Radix


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"steps": 0}, "Radix.steps"),
        ({"steps": 2.0}, "Radix.steps"),
        ({"base": 1}, "Radix.base"),
        ({"base": 2.5}, "Radix.base"),
        ({"base": True}, "Radix.base"),
        ({"leak": 0.0}, "Radix.leak"),
        ({"leak": 1.5}, "Radix.leak"),
        ({"leak": math.nan}, "Radix.leak"),
        ({"threshold": -0.5}, "Radix.threshold"),
        ({"threshold": 2.0}, "Radix.threshold"),
        ({"mode": "lsb"}, "Radix.mode"),
        ({"weight_bits": -1}, "Radix.weight_bits"),
        ({"steps": 41}, "Radix.steps"),
    ],
)
def test_radix_spec_rejects_bad_fields(kwargs, fragment) -> None:
    with pytest.raises(SpecError, match=fragment):
        Radix(**kwargs)


def test_radix_spec_derived_numbers() -> None:
    spec = Radix(steps=3, base=4)
    assert (spec.levels, spec.substeps, spec.steps_per_layer, spec.layer_latency) == (64, 3, 9, 9)
    assert spec.leak_factor == spec.normalised_threshold == 0.25 and spec.is_radix_setting
    assert not Radix(leak=0.6).is_radix_setting


def test_radix_is_registered() -> None:
    assert neuron_functions(Radix()).step is radix_step


def _digits(spikes: torch.Tensor) -> str:
    return "".join(str(int(s)) for s in spikes.flatten())


def test_radix_paper_step_reproduces_figure_4() -> None:
    # weight '10' (= 2) times input '101' (= 5) sent LSB first: output '1010' = 10, LSB first.
    spec = Radix(steps=3, mode="paper")
    currents = torch.tensor([[2.0], [0.0], [2.0], [0.0]])
    out = simulate(spec, currents, record=True)
    assert out.spikes.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert out.states.v.flatten().tolist() == [1.0, 0.0, 1.0, 0.0]  # after the leak stage
    aligned = out.spikes[1:]  # drop the least significant step: '101', scaled by 2^-1
    assert _digits(aligned.flip(0)) == "101"


def test_radix_exact_step_matches_hand_trace() -> None:
    # T = 3, base 2: input digits of 0.625 (1, 0, 1), MSB first, then three empty steps.
    spec = Radix(steps=3)
    state = radix_initial_state(spec, torch.zeros(1))
    trace = []
    for current in [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]:
        spikes, state = radix_step(torch.tensor([current]), state, spec)
        trace.append((int(spikes), state.v.item(), state.acc.item()))
    assert trace == [
        (0, 0.0, 1.0),
        (0, 0.0, 2.0),
        (0, 5.0, 0.0),
        (1, 1.0, 0.0),
        (0, 1.0, 0.0),
        (1, 0.0, 0.0),
    ]


@pytest.mark.parametrize("base", [2, 3, 4])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_radix_exact_neuron_gives_quantised_clipped_relu(base, steps) -> None:
    spec = Radix(steps=steps, base=base)
    window = spec.steps_per_layer
    generator = torch.Generator().manual_seed(base * 10 + steps)
    # integer currents in units of the grid keep the check free of rounding
    currents = torch.randint(-3, 4, (window, 200), generator=generator).to(torch.float64) / 2
    out = simulate(spec, torch.cat([currents, torch.zeros_like(currents)]))
    digit_weights = torch.tensor([base ** -(j + 1) for j in range(steps)], dtype=torch.float64)
    z = (currents.reshape(steps, spec.substeps, -1).sum(1) * digit_weights[:, None]).sum(0)
    # r^T z is a multiple of 1/2; snapping repairs the float rounding of z for base 3
    assert torch.equal(decode_radix(out.spikes[window:], spec), radix_twin(z, spec, snap_bits=1))
    assert torch.all(out.spikes[:window] == 0)


def test_radix_exact_neuron_is_pipelined() -> None:
    # a second window's input is integrated while the first window's digits go out
    spec = Radix(steps=2)
    currents = torch.tensor([[1.0], [1.0], [0.0], [1.0], [0.0], [0.0]])  # 0.75, then 0.25
    assert simulate(spec, currents).spikes.flatten().tolist() == [0, 0, 1, 1, 0, 1]


def test_radix_step_rejects_shape_change_and_non_radix_setting() -> None:
    spec = Radix(steps=2)
    state = radix_initial_state(spec, torch.zeros(3))
    with pytest.raises(SpecError, match="reset the state"):
        radix_step(torch.zeros(2), state, spec)
    with pytest.raises(SpecError, match="leak = threshold = 1/base"):
        radix_step(torch.zeros(3), state, Radix(steps=2, leak=0.7))


def test_radix_step_surrogate_keeps_spikes_and_gives_gradient() -> None:
    spec = Radix(steps=2)
    currents = torch.tensor([[0.3], [1.0], [0.0], [0.0]], requires_grad=True)
    plain = simulate(spec, currents.detach()).spikes
    out = simulate(spec, currents, surrogate=lambda x: torch.sigmoid(4 * x)).spikes
    assert torch.equal(out.detach(), plain)
    out.sum().backward()
    assert currents.grad is not None and currents.grad.abs().sum() > 0


def test_radix_twin_values_and_straight_through_gradient() -> None:
    spec = Radix(steps=3)
    z = torch.tensor([-0.5, 0.0, 0.2, 0.999, 1.0, 3.0], requires_grad=True)
    y = radix_twin(z, spec)
    assert y.tolist() == [0.0, 0.0, 0.125, 0.875, 0.875, 0.875]
    y.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert radix_twin_parameters(spec) == (8, 0.0)
