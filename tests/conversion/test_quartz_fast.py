"""The loop-free Quartz forward pass (``Quartz(analytic=True)``) equals the step simulation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import snn_encodings as se
from snn_encodings.conversion.rules.quartz import QuartzLayer
from snn_encodings.specs import Quartz


def _random_net(seed: int, pool: str) -> nn.Module:
    torch.manual_seed(seed)
    pooling = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        pooling,
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 12),
        nn.ReLU(),
        nn.Linear(12, 5),
    )


def _run(network: se.SpikingNetwork, x: torch.Tensor):
    layers = [m for m in network.modules() if isinstance(m, QuartzLayer)]
    for layer in layers:
        layer.reset_counters()
    network.reset_counts()
    network.counting = True
    with torch.no_grad():
        out = network(x)
    network.counting = False
    counters = [(m.neurons, m.spikes, m.early_spikes) for m in layers]
    counts = [(c.spikes, c.synaptic_events, c.samples) for c in network.counts]
    return out, [m.last_early for m in layers], counters, counts, [m.last_state for m in layers]


def _compare(ann: nn.Module, x: torch.Tensor, calibration, **spec) -> int:
    fast = se.convert(ann, Quartz(analytic=True, **spec), calibration, percentile=90.0)
    slow = se.convert(ann, Quartz(analytic=False, **spec), calibration, percentile=90.0)
    got, want = _run(fast, x), _run(slow, x)
    assert torch.equal(got[0], want[0])
    for a, b in zip(got[1], want[1]):
        assert torch.equal(a, b)
    assert got[2] == want[2]
    assert got[3] == want[3]
    for a, b in zip(got[4], want[4]):
        for field_a, field_b in zip(a, b):
            assert torch.equal(field_a, field_b)
    return sum(c[2] for c in got[2])


@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize(("t_max", "rounding"), [(4, "round"), (8, "floor"), (16, "round")])
def test_quartz_fast_forward_equals_simulation_on_random_networks(
    pool, t_max, rounding, mode
) -> None:
    ann = _random_net(t_max, pool)
    torch.manual_seed(1)
    x = torch.rand(40, 1, 8, 8)
    calibration = DataLoader(TensorDataset(x[:20], torch.zeros(20)), batch_size=10)
    _compare(ann, x, calibration, t_max=t_max, rounding=rounding, mode=mode)


@pytest.mark.parametrize("mode", ["exact", "paper"])
def test_quartz_fast_forward_reproduces_early_spikes(mode) -> None:
    # large weights: the paper's neuron fires early, the exact one holds those spikes
    ann = _random_net(3, "max")
    with torch.no_grad():
        for module in ann.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.mul_(3.0)
    torch.manual_seed(2)
    x = torch.rand(40, 1, 8, 8)
    calibration = DataLoader(TensorDataset(x[:20], torch.zeros(20)), batch_size=10)
    early = _compare(ann, x, calibration, t_max=8, mode=mode)
    assert (early > 0) == (mode == "paper")


@pytest.mark.parametrize("mode", ["exact", "paper"])
def test_quartz_fast_forward_equals_simulation_on_mnist(
    trained_ann, mnist_eval, mnist_calibration, mode
) -> None:
    calibration = DataLoader(Subset(mnist_calibration, range(500)), batch_size=250)
    images = mnist_eval.tensors[0][:60]
    early = _compare(trained_ann, images, calibration, t_max=8, mode=mode)
    assert (early > 0) == (mode == "paper")
