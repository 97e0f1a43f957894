"""Quartz with the first layer in float (``float_first_layer``), on standardised MNIST inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snn_encodings as se
from snn_encodings.errors import ConversionError, SnnEncodingsError
from snn_encodings.specs import Quartz

MEAN, STD = 0.1307, 0.3081


def _standardised(ann: nn.Module) -> nn.Module:
    """A copy of the demo convnet that takes (x - MEAN) / STD and computes ann(x) exactly."""
    model = copy.deepcopy(ann)
    conv = model[0]
    assert isinstance(conv, nn.Conv2d) and conv.padding == (0, 0)
    with torch.no_grad():
        conv.bias.add_(MEAN * conv.weight.sum(dim=(1, 2, 3)))
        conv.weight.mul_(STD)
    return model


@pytest.fixture(scope="module")
def standardised(trained_ann, mnist_eval, mnist_calibration):
    ann = _standardised(trained_ann)
    images = (mnist_eval.tensors[0] - MEAN) / STD
    calibration = DataLoader(
        TensorDataset((mnist_calibration.tensors[0][:500] - MEAN) / STD), batch_size=250
    )
    return ann, images, mnist_eval.tensors[1], calibration


@pytest.mark.parametrize("t_max", [8, 16])
def test_float_first_layer_equals_twin_on_every_standardised_eval_image(
    standardised, trained_ann, t_max
) -> None:
    ann, images, labels, calibration = standardised
    assert images.min() < 0  # standardised pixels: outside the encoder's [0, 1]
    spec = Quartz(t_max=t_max, float_first_layer=True, analytic=True)
    network = se.convert(ann, spec, calibration)
    with torch.no_grad():
        out, twin = network(images), network.twin(images)
        reference = trained_ann((images * STD + MEAN).float())
    assert torch.equal(out, twin)
    accuracy = (out.argmax(1) == labels).float().mean().item()
    ann_accuracy = (reference.argmax(1) == labels).float().mean().item()
    assert accuracy >= ann_accuracy - 0.01
    stepped = se.convert(ann, Quartz(t_max=t_max, float_first_layer=True), calibration)
    with torch.no_grad():
        assert torch.equal(stepped(images[:40]), twin[:40])


def test_float_first_layer_counts_no_input_spikes_or_first_layer_events(standardised) -> None:
    ann, images, labels, calibration = standardised
    network = se.convert(ann, Quartz(t_max=8, float_first_layer=True), calibration)
    loader = DataLoader(TensorDataset(images[:20], labels[:20]), batch_size=10)
    result = se.evaluate(network, loader, progress=False)
    inputs, first = result.layers[0], result.layers[1]
    assert inputs.spikes == 0 and first.synaptic_events == 0
    assert first.spikes == 20 * first.neurons  # one spike per neuron: the encoded activation
    assert result.latency == network.latency < se.convert(ann, Quartz(t_max=8), calibration).latency


def test_standardised_inputs_without_float_first_layer_raise(standardised) -> None:
    ann, images, _, calibration = standardised
    with pytest.raises(SnnEncodingsError, match="values must be >= 0"):
        network = se.convert(ann, Quartz(t_max=8), calibration)
        network(images[:4])


def test_float_first_layer_needs_a_hidden_first_layer() -> None:
    ann = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(8, 1, 4, 4)
    with pytest.raises(ConversionError, match="float_first_layer needs a hidden layer"):
        se.convert(ann, Quartz(t_max=4, float_first_layer=True), [x])


def test_norse_view_refuses_a_float_first_layer(standardised) -> None:
    from conftest import require

    require("norse")
    from snn_encodings.adapters.norse import from_spiking_network

    ann, _, _, calibration = standardised
    network = se.convert(ann, Quartz(t_max=4, float_first_layer=True), calibration)
    with pytest.raises(ConversionError, match="float first layer"):
        from_spiking_network(network)


def test_snntorch_view_runs_a_float_first_layer(standardised) -> None:
    from conftest import require

    require("snntorch")
    from snn_encodings.adapters.snntorch import SnnTorchNetwork

    ann, images, _, calibration = standardised
    network = se.convert(ann, Quartz(t_max=4, float_first_layer=True), calibration)
    with torch.no_grad():
        want = network(images[:8])
        view = SnnTorchNetwork(copy.deepcopy(network))
        assert torch.equal(view.predict(images[:8]), want.argmax(1))
        spikes, _ = view(images[:8])  # time-first output spike trains
    assert spikes.shape[1:] == (8, 10) and spikes.sum() > 0
