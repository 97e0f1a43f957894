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


def _early_images(network: se.SpikingNetwork) -> torch.Tensor:
    """Per image of the last call: did any neuron fire during the encode phase."""
    layers = [stage.neurons for stage in network.stages if stage.kind != "pool"]
    return torch.stack([layer.last_early.flatten(1).any(1) for layer in layers]).any(0)


@pytest.mark.parametrize("t_max", [8, 16, 32])
def test_quartz_exact_mode_reproduces_twin_on_every_eval_image(
    trained_ann, calibration, mnist_eval, images, t_max
) -> None:
    # default percentile 98.5: the paper's neuron fires early on some of these images
    everything = mnist_eval.tensors[0]
    network = se.convert(trained_ann, Quartz(t_max=t_max, analytic=True), calibration)
    with torch.no_grad():
        assert torch.equal(network(everything), network.twin(everything))
    assert not _early_images(network).any()
    stepped = se.convert(trained_ann, Quartz(t_max=t_max), calibration)
    with torch.no_grad():
        assert torch.equal(stepped(images), network.twin(images))


# Paper-mode early spikes change the prediction on a few images, most often at small t_max. The
# bars are the committed network's measured agreement on these 100 images, rounded down: 0.93 at
# t_max 8 (a network trained on another machine gave 0.95), 0.96 at 16 and 0.97 at 32.
@pytest.mark.parametrize(("t_max", "agreement"), [(8, 0.92), (16, 0.95), (32, 0.95)])
def test_quartz_paper_mode_equals_twin_on_images_without_early_spikes(
    trained_ann, calibration, images, t_max, agreement
) -> None:
    spec = Quartz(t_max=t_max, mode="paper", analytic=True)
    network = se.convert(trained_ann, spec, calibration)
    with torch.no_grad():
        out, twin = network(images), network.twin(images)
    early = _early_images(network)
    assert torch.equal(out[~early], twin[~early])
    layers = [stage.neurons for stage in network.stages if stage.kind != "pool"]
    fraction = sum(layer.early_spikes for layer in layers) / sum(layer.neurons for layer in layers)
    assert 0 < fraction < 0.05
    assert (out.argmax(1) == twin.argmax(1)).float().mean() >= agreement


@pytest.mark.parametrize("mode", ["exact", "paper"])
def test_quartz_analytic_path_equals_step_simulation_on_mnist(
    trained_ann, calibration, images, mode
) -> None:
    # the analytic network never calls its neuron layers (no spike trains to hook): compare
    # outputs, early-spike masks and counters
    stepped = se.convert(trained_ann, Quartz(t_max=8, mode=mode, analytic=False), calibration)
    analytic = se.convert(trained_ann, Quartz(t_max=8, mode=mode, analytic=True), calibration)
    with torch.no_grad():
        assert torch.equal(analytic(images[:50]), stepped(images[:50]))
    for got, want in zip(analytic.stages, stepped.stages):
        if got.neurons is not None:
            assert torch.equal(got.neurons.last_early, want.neurons.last_early)
            assert got.neurons.spikes == want.neurons.spikes
            assert got.neurons.early_spikes == want.neurons.early_spikes
