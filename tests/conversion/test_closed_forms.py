"""The closed forms (radix exact mode, Quartz ``analytic``) equal the step simulation spike for
spike and counter for counter, on zoo models."""

from __future__ import annotations

import pytest
import torch

import snn_encodings as se
from snn_encodings import zoo
from snn_encodings.coding.radix import encode_radix
from snn_encodings.conversion.rules.radix import RadixLayer
from snn_encodings.functional.radix import RadixState
from snn_encodings.specs import Radix

CASES = [("resnet18", 0.125), ("mobilenetv2", 0.25), ("vgg11_bn", 0.125), ("convnet", 1.0)]


def _network(name: str, width: float, spec) -> tuple[se.SpikingNetwork, torch.Tensor]:
    torch.manual_seed(0)
    model = zoo.set_batch_norm_stats(zoo.build(name, width=width), zoo.input_shape(name))
    x = torch.rand((3, *zoo.input_shape(name)), generator=torch.Generator().manual_seed(0))
    return se.convert(model, spec, [x]), x


def _run(network: se.SpikingNetwork, x: torch.Tensor, fast: bool):
    """Outputs, per-layer counts, final states and the hidden layers' output spike trains."""
    network.use_fast_path = fast
    trains: list[torch.Tensor] = []
    hooks = [
        stage.neurons.register_forward_hook(lambda m, i, out: trains.append(out))
        for stage in network.stages
        if stage.neurons is not None
    ]
    network.reset_counts()
    network.counting = True
    with torch.no_grad():
        out = network(x)
    network.counting = False
    for hook in hooks:
        hook.remove()
    counts = [(c.spikes, c.synaptic_events, c.samples) for c in network.counts]
    layers = [m for m in network.modules() if isinstance(m, RadixLayer)]
    return out, counts, [m.last_state for m in layers], [m.readout for m in layers], trains


RADIX_CASES = [(name, width, Radix()) for name, width in CASES] + [
    ("convnet", 1.0, Radix(steps=4, base=4)),
    ("vgg11_bn", 0.125, Radix(steps=3, base=4)),
]


@pytest.mark.parametrize(
    ("name", "width", "spec"), RADIX_CASES, ids=[f"{n}-base{s.base}" for n, _, s in RADIX_CASES]
)
def test_radix_closed_form_equals_the_step_simulation(name: str, width: float, spec: Radix) -> None:
    network, x = _network(name, width, spec)
    fast = _run(network, x, fast=True)
    slow = _run(network, x, fast=False)
    assert not fast[4], "the closed form must not call the neuron layers"
    assert torch.equal(fast[0], slow[0])
    assert fast[1] == slow[1]
    for got, want in zip(fast[2], slow[2]):
        assert isinstance(got, RadixState)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    for got, want in zip(fast[3], slow[3]):
        assert (got is None and want is None) or torch.equal(got, want)
    # the digit trains derived from the twin values are the simulated spike trains
    with torch.no_grad():
        values = network.activations(x)
    hidden = [i for i, stage in enumerate(network.stages, start=1) if stage.kind == "neuron"]
    for index, train in zip(hidden, slow[4]):
        assert torch.equal(encode_radix(values[index], spec), train)
