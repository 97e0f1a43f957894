"""SNN == ANN twin on the shipped MNIST data, with the trained demo network."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

import snn_encodings as se
from snn_encodings.specs import Quartz, Radix


@pytest.fixture(scope="module")
def images(mnist_eval) -> torch.Tensor:
    return mnist_eval.tensors[0][:100]


@pytest.fixture(scope="module")
def calibration(mnist_calibration) -> DataLoader:
    return DataLoader(Subset(mnist_calibration, range(500)), batch_size=250)


@pytest.mark.parametrize("steps", [3, 4, 6, 8])
def test_radix_exact_mode_reproduces_twin_values(trained_ann, calibration, images, steps) -> None:
    network = se.convert(trained_ann, Radix(steps=steps), calibration)
    with torch.no_grad():
        assert torch.equal(network(images), network.twin(images))


@pytest.mark.parametrize("t_max", [8, 16, 32])
def test_quartz_reproduces_twin_without_early_spikes(
    trained_ann, calibration, images, t_max
) -> None:
    # at the maximum (percentile 100) no neuron of this network fires during the encode phase
    network = se.convert(trained_ann, Quartz(t_max=t_max), calibration, percentile=100.0)
    with torch.no_grad():
        out, twin = network(images), network.twin(images)
    layers = [stage.neurons for stage in network.stages if stage.kind != "pool"]
    early = torch.stack([layer.last_early.flatten(1).any(1) for layer in layers]).any(0)
    assert torch.equal(out[~early], twin[~early])
    assert torch.equal(out.argmax(1), twin.argmax(1))


def test_quartz_default_percentile_reports_early_spikes(trained_ann, calibration, images) -> None:
    network = se.convert(trained_ann, Quartz(t_max=16), calibration)
    with torch.no_grad():
        out, twin = network(images), network.twin(images)
    layers = [stage.neurons for stage in network.stages if stage.kind != "pool"]
    early = sum(layer.early_spikes for layer in layers) / sum(layer.neurons for layer in layers)
    assert 0 <= early < 0.05
    assert (out.argmax(1) == twin.argmax(1)).float().mean() >= 0.95


def test_quartz_analytic_path_equals_step_simulation_on_mnist(
    trained_ann, calibration, images
) -> None:
    # the analytic network never calls its neuron layers (no spike trains to hook): compare
    # outputs, early-spike masks and counters
    stepped = se.convert(trained_ann, Quartz(t_max=8), calibration)
    analytic = se.convert(trained_ann, Quartz(t_max=8, analytic=True), calibration)
    with torch.no_grad():
        assert torch.equal(analytic(images[:50]), stepped(images[:50]))
    for got, want in zip(analytic.stages, stepped.stages):
        if got.neurons is not None:
            assert torch.equal(got.neurons.last_early, want.neurons.last_early)
            assert got.neurons.spikes == want.neurons.spikes
            assert got.neurons.early_spikes == want.neurons.early_spikes
