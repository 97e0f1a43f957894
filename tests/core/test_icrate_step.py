from __future__ import annotations

import pytest
import torch

from snn_encodings.errors import SpecError
from snn_encodings.functional import icrate_initial_state, icrate_step, simulate
from snn_encodings.functional.surrogate import atan, fast_sigmoid, spike
from snn_encodings.specs import ICRate


def test_icrate_step_matches_hand_trace() -> None:
    spec = ICRate(steps=5, init="zero")
    currents = torch.tensor([[0.6], [0.6], [0.6], [-0.5], [1.5]])
    out = simulate(spec, currents, record=True)
    # v: 0.6 -> 1.2 fire 0.2 -> 0.8 -> 0.3 -> 1.8 fire 0.8
    assert out.spikes.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    torch.testing.assert_close(out.states.v.flatten(), torch.tensor([0.6, 0.2, 0.8, 0.3, 0.8]))


def test_icrate_initial_state_uses_half_threshold_for_ann_init() -> None:
    state = icrate_initial_state(ICRate(threshold=2.0, init="ann"), torch.zeros(3))
    assert state.v.tolist() == [1.0, 1.0, 1.0]


def test_icrate_count_equals_floor_formula() -> None:
    spec = ICRate(steps=7, init="ann")
    z = torch.linspace(0, 1, 101, dtype=torch.float64)
    out = simulate(spec, z.expand(7, -1).clone())
    expected = torch.floor(7 * z + 0.5).clamp(0, 7)
    assert torch.equal(out.spikes.sum(0), expected)


def test_icrate_step_rejects_shape_mismatch() -> None:
    spec = ICRate()
    state = icrate_initial_state(spec, torch.zeros(2, 3))
    with pytest.raises(SpecError, match="reset the state"):
        icrate_step(torch.zeros(2, 4), state, spec)


def test_simulate_rejects_nan_and_non_time_first() -> None:
    with pytest.raises(SpecError, match="NaN"):
        simulate(ICRate(), torch.tensor([[float("nan")]]))
    with pytest.raises(SpecError, match="time-first"):
        simulate(ICRate(), torch.zeros(3))


@pytest.mark.parametrize("surrogate", [fast_sigmoid(), atan()], ids=["fast_sigmoid", "atan"])
def test_spike_values_stay_exact_and_gradient_flows(surrogate) -> None:
    x = torch.tensor([-0.3, 0.0, 0.4], requires_grad=True)
    out = spike(x, surrogate)
    assert out.tolist() == [0.0, 1.0, 1.0]
    out.sum().backward()
    assert torch.all(x.grad > 0)


def test_icrate_trains_with_surrogate() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, generator=generator, requires_grad=True)
    inputs = torch.rand(16, 8, 4, generator=generator)
    target = torch.rand(8, 3, generator=generator)
    spec = ICRate(steps=16)
    optimiser = torch.optim.SGD([weight], lr=0.5)
    losses = []
    for _ in range(5):
        out = simulate(spec, inputs @ weight, surrogate=fast_sigmoid())
        loss = ((out.spikes.mean(0) - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_signed_icrate_takes_spikes_back_by_hand_trace() -> None:
    spec = ICRate(steps=6, init="zero", signed=True)
    currents = torch.tensor([[3.0], [0.0], [-2.5], [0.0], [0.2], [-0.9]])
    out = simulate(spec, currents, record=True)
    # v: 3 fire 2 | 2 fire 1 | -1.5 back -0.5 | -0.5 back 0.5 | 0.7 | -0.2 (count 0: no spike)
    assert out.spikes.flatten().tolist() == [1.0, 1.0, -1.0, -1.0, 0.0, 0.0]
    assert out.states.count.flatten().tolist() == [1.0, 2.0, 1.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(
        out.states.v.flatten(), torch.tensor([2.0, 1.0, -0.5, 0.5, 0.7, -0.2])
    )
    # the unsigned neuron keeps both spikes for a total input of -0.2
    assert simulate(ICRate(steps=6, init="zero"), currents).spikes.sum().item() == 2.0


def test_signed_icrate_count_follows_the_total_input_in_any_order() -> None:
    generator = torch.Generator().manual_seed(0)
    spec = ICRate(steps=64, signed=True)
    # a constant value in [-0.2, 0.8) under bursts of up to several thresholds that cancel in
    # pairs (one spike per step: a value near 1 has no steps left to catch up on a burst)
    value = torch.rand(500, generator=generator, dtype=torch.float64) - 0.2
    burst = torch.randn(28, 500, generator=generator, dtype=torch.float64) * 2
    quiet = torch.zeros(8, 500, dtype=torch.float64)  # the last steps let a neuron catch up
    currents = value + torch.cat([torch.stack([burst, -burst], 1).flatten(0, 1), quiet])
    out = simulate(spec, currents)
    count, v = out.spikes.sum(0), out.state.v
    settled = ((v >= 0) & (v < 1)) | ((v < 0) & (count == 0))
    assert settled.float().mean() > 0.95
    want = torch.floor(currents.sum(0) + 0.5).clamp(min=0)
    assert torch.equal(count[settled], want[settled])
    assert torch.equal(out.state.count, count)
    unsigned = simulate(ICRate(steps=64), currents).spikes.sum(0)
    assert (unsigned[settled] != want[settled]).float().mean() > 0.25  # it keeps spikes


def test_signed_icrate_needs_its_count_and_passes_gradients_to_take_backs() -> None:
    spec = ICRate(steps=2, init="zero", signed=True)
    with pytest.raises(SpecError, match="net spike count"):
        icrate_step(torch.zeros(1), icrate_initial_state(ICRate(), torch.zeros(1)), spec)
    v = torch.tensor([-0.4], requires_grad=True)
    state = icrate_initial_state(spec, torch.zeros(1))
    state = state._replace(v=v, count=torch.ones(1))
    spikes, _ = icrate_step(torch.zeros(1), state, spec, surrogate=fast_sigmoid())
    assert spikes.tolist() == [-1.0]
    spikes.sum().backward()
    assert v.grad is not None and v.grad.item() > 0  # a higher membrane takes less back
