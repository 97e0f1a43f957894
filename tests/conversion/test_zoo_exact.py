"""Radix and Quartz exact modes equal their twins bit for bit on every zoo model.

The spiking side is the step simulation (``analytic=False``, ``use_fast_path=False``): it
drives every layer with ``Synapse.drive`` over spike trains and steps the neurons, sharing no
arithmetic with the twin's value passes. The closed forms are checked against it spike for
spike in ``test_closed_forms``.
"""

from __future__ import annotations

import pytest
import torch

import snn_encodings as se
from snn_encodings import zoo
from snn_encodings.specs import Quartz, Radix

#: Slim widths for 2 cores.
CASES = [
    ("resnet18", 0.125),
    ("vgg11_bn", 0.125),
    ("vgg16", 0.125),
    ("vgg16_bn", 0.125),
    ("mobilenetv2", 0.25),
    ("convnet", 1.0),
    ("lenet5", 1.0),
]
SPECS = [Radix(), Quartz(t_max=16, analytic=False)]
_CIFAR = zoo.input_shape("resnet18")


def _model(name: str, width: float, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = zoo.set_batch_norm_stats(zoo.build(name, width=width), zoo.input_shape(name))
    inputs = torch.rand((3, *zoo.input_shape(name)), generator=torch.Generator().manual_seed(seed))
    return model, inputs


def _simulated(network: se.SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    network.use_fast_path = False
    with torch.no_grad():
        return network(x)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize(("name", "width"), CASES, ids=[f"{n}-{w}" for n, w in CASES])
def test_zoo_snn_equals_twin_bit_for_bit(name: str, width: float, spec) -> None:
    model, x = _model(name, width)
    network = se.convert(model, spec, [x])
    with torch.no_grad():
        twin = network.twin(x)
    assert torch.equal(_simulated(network, x), twin)


def test_chained_convolutions_sums_on_a_product_grid_stay_exact() -> None:
    """In MobileNetV2 the linear projection and the next block's expansion chain two grid
    weights, so those sums lie on 2**-32, finer than the weights' 2**-16 grid. On this image,
    snapping the sum to 2**-16 (as the twin once did) moves a neuron across a rounding
    boundary; the twin must not round it. (The image was found with time-coded biases, which
    the test keeps so that it stays the same case.)"""
    torch.manual_seed(0)
    model = zoo.set_batch_norm_stats(zoo.build("mobilenetv2", width=0.25), _CIFAR)
    calibration = torch.rand((8, *_CIFAR), generator=torch.Generator().manual_seed(0))
    spec = Quartz(t_max=16, analytic=False, bias_coding="time", weight_frac_bits=16)
    network = se.convert(model, spec, [calibration])
    x = calibration[3:4]
    assert any(bound is not None and bound.grid_bits == 32 for bound in network.layer_bounds())
    with torch.no_grad():
        values = network.activations(x)
        snapped = [
            network.rule.twin(stage.synapse.value(values[:index]))
            for index, stage in enumerate(network.stages, start=1)
            if stage.kind == "neuron"
        ]
        hidden = [v for v, s in zip(values[1:], network.stages) if s.kind == "neuron"]
        assert any(not torch.equal(a, b) for a, b in zip(snapped, hidden))
        assert torch.equal(_simulated(network, x), network.twin(x))


@pytest.mark.parametrize("per_channel", [False, True])
def test_residual_shortcut_gains_are_merged_onto_the_weight_grid(per_channel: bool) -> None:
    """A weightless shortcut's input and output scales (per layer, or both per channel on an
    identity shortcut) are multiplied before one rounding, so the block's sum stays on the
    weights' grid (2**-12 by default)."""
    model, x = _model("resnet18", 0.125)
    spec = Quartz(t_max=16)
    network = se.convert(model, spec, [x], per_channel=per_channel)
    residual = [
        bound.grid_bits
        for stage, bound in zip(network.stages, network.layer_bounds())
        if stage.synapse is not None and len(stage.synapse.sources) == 2
    ]
    assert len(residual) == 8 and set(residual) == {spec.weight_frac_bits}
    with torch.no_grad():
        assert torch.equal(_simulated(network, x), network.twin(x))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_trained_convnet_snn_equals_twin_bit_for_bit(trained_ann, mnist_eval, spec) -> None:
    images = mnist_eval.tensors[0][:64]
    network = se.convert(trained_ann, spec, [images[:32]])
    with torch.no_grad():
        twin = network.twin(images)
    assert torch.equal(_simulated(network, images), twin)
