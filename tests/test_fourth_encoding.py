"""A fourth encoding defined entirely here, registered with its record, runs everywhere.

``PlainIF`` is plain integrate-and-fire rate coding: reset by subtraction from a zero membrane,
analog input current every step, output read as the spike count over the window. Nothing in
the library names it: conversion, evaluation, export's refusals and the framework adapters'
generic neurons find everything through its :class:`~snn_encodings.encoding.Encoding` record.

Reference: the library's ``ICRate(init="zero", compensate=False)`` computes the same function
with its own step, coders and rule, so a network converted with ``PlainIF`` must give exactly
the outputs of one converted with that spec (same ANN, calibration and percentile).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
from conftest import require
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

import snn_encodings as se
from snn_encodings.conversion.rules.base import NeuronLayer, Rule
from snn_encodings.encoding import (
    Encoding,
    encoding_for,
    register_encoding,
    unregister_encoding,
)
from snn_encodings.errors import ExportError
from snn_encodings.functional.surrogate import Surrogate, spike
from snn_encodings.specs.base import Spec, check_float, check_int
from snn_encodings.testing import assert_same_trace, run_core

STEPS = 32
REFUSAL = (
    "export.netx: PlainIF is not exported to netx: this test encoding has no lowering; "
    "export the network with the IC-rate encoding instead"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlainIF(Spec):
    """Integrate-and-fire rate coding: ``steps`` steps per window, threshold ``threshold``."""

    steps: int = 16
    threshold: float = 1.0

    def __post_init__(self) -> None:
        check_int(self, "steps", minimum=1)
        check_float(self, "threshold", positive=True)

    @property
    def steps_per_layer(self) -> int:
        return self.steps

    @property
    def layer_latency(self) -> int:
        return 0


class PlainIFState(NamedTuple):
    v: Tensor


def plain_if_initial_state(
    spec: PlainIF, like: Tensor, *, v0: float | Tensor | None = None
) -> PlainIFState:
    return PlainIFState(torch.zeros_like(like) + (0.0 if v0 is None else v0))


def plain_if_step(
    current: Tensor, state: PlainIFState, spec: PlainIF, /, *, surrogate: Surrogate | None = None
) -> tuple[Tensor, PlainIFState]:
    v = state.v + current
    spikes = spike(v - spec.threshold, surrogate)
    return spikes, PlainIFState(v - spec.threshold * spikes.detach())


def encode_plain_if(x: Tensor, spec: PlainIF) -> Tensor:
    return x.unsqueeze(0).expand(spec.steps, *x.shape).clone()


def decode_plain_if(spikes: Tensor, spec: PlainIF) -> Tensor:
    return spikes.sum(0) * spec.threshold / spec.steps


class PlainIFRule(Rule):
    spec: PlainIF
    supports_max_pool = False

    def twin_parameters(self) -> tuple[int | None, float, float]:
        return self.spec.steps, 0.0, 1.0

    def twin_output(self, z: Tensor) -> Tensor:
        return z.clamp(0, 1)

    def calibration_percentile(self) -> float | None:
        return 99.99

    def encode_input(self, x: Tensor) -> Tensor:
        return encode_plain_if(x, self.spec)

    def bias_currents(self, bias: Tensor, steps: int) -> Tensor:
        return bias.unsqueeze(0).expand(steps, *bias.shape)

    def neuron_layer(self, output: bool) -> nn.Module:
        return NeuronLayer(self.spec, output=output)

    def decode_output(self, spikes: Tensor, layer: nn.Module) -> Tensor:
        return decode_plain_if(spikes, self.spec)


@pytest.fixture(autouse=True)
def plain_if() -> Iterator[Encoding]:
    record = register_encoding(
        Encoding(
            spec_type=PlainIF,
            initial_state=plain_if_initial_state,
            step=plain_if_step,
            encode=encode_plain_if,
            decode=decode_plain_if,
            rule=PlainIFRule,
            netx_refusal=REFUSAL,
            nir_limit="this test encoding has no NIR form",
        )
    )
    yield record
    unregister_encoding(PlainIF)


@pytest.fixture(scope="module")
def loaders(mnist_calibration, mnist_eval) -> tuple[DataLoader, DataLoader]:
    calibration = DataLoader(Subset(mnist_calibration, range(500)), batch_size=250)
    return calibration, DataLoader(Subset(mnist_eval, range(500)), batch_size=250)


def test_core_neuron_is_the_registered_one(make_currents) -> None:
    currents = make_currents((3, 4), steps=9)
    out = se.functional.simulate(PlainIF(steps=9), currents)
    v = torch.zeros(3, 4)
    for t, current in enumerate(currents):
        v = v + current
        fired = v >= 1.0
        assert torch.equal(out.spikes[t], fired.float())
        v = v - fired.float()


def test_converts_and_equals_the_icrate_reference_on_mnist(trained_ann, loaders) -> None:
    calibration, evaluation = loaders
    before = {k: v.clone() for k, v in trained_ann.state_dict().items()}
    network = se.convert(trained_ann, PlainIF(steps=STEPS), calibration)
    reference = se.convert(
        trained_ann, se.ICRate(steps=STEPS, init="zero", compensate=False), calibration
    )
    assert all(torch.equal(v, trained_ann.state_dict()[k]) for k, v in before.items())
    x = next(iter(evaluation))[0]
    with torch.no_grad():
        out, twin = network(x), network.twin(x)
        assert torch.equal(out, reference(x))
    # the rate bound: in threshold units the outputs differ from the quantised twin by less than
    # one spike count of the window on average, and the predicted classes agree
    error = ((out - twin) / network.output_scale).abs()
    assert error.mean() < 1 / STEPS
    assert (out.argmax(1) == twin.argmax(1)).float().mean() >= 0.95


def test_evaluates_close_to_the_ann(trained_ann, loaders) -> None:
    calibration, evaluation = loaders
    network = se.convert(trained_ann, PlainIF(steps=STEPS), calibration)
    snn = se.evaluate(network, evaluation, progress=False)
    ann = se.evaluate(trained_ann, evaluation, progress=False)
    assert snn.samples == 500 and snn.accuracy >= ann.accuracy - 0.02


def test_netx_and_nir_refuse_it_with_the_records_reason(trained_ann, loaders, tmp_path) -> None:
    require("h5py")
    network = se.convert(trained_ann, PlainIF(steps=4), loaders[0])
    with pytest.raises(ExportError, match="PlainIF is not exported to netx"):
        se.export.netx(network, tmp_path / "plain.net")
    assert not os.listdir(tmp_path)
    from snn_encodings.export.converted import float_network

    require("nir")
    with pytest.raises(ExportError, match="PlainIF has no NIR equivalent: this test encoding"):
        se.export.nir(float_network(network), tmp_path / "plain.nir")
    assert encoding_for(PlainIF()).netx_refusal == REFUSAL


def test_snntorch_generic_neuron_runs_it(make_currents) -> None:
    require("snntorch")
    from snn_encodings.adapters.snntorch import Neuron

    spec = PlainIF(steps=10)
    currents = make_currents((2, 5), steps=10)
    neuron = Neuron(spec)
    mem = neuron.reset_mem()
    spikes, membranes = [], []
    for current in currents:
        spk, mem = neuron(current, mem)
        spikes.append(spk)
        membranes.append(mem)
    assert_same_trace((torch.stack(spikes), torch.stack(membranes)), run_core(spec, currents))


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_spikingjelly_generic_node_runs_it(step_mode: str, make_currents) -> None:
    require("spikingjelly")
    from snn_encodings.adapters.spikingjelly import Node

    spec = PlainIF(steps=10)
    currents = make_currents((2, 5), steps=10)
    node = Node(spec, step_mode=step_mode, store_v_seq=True)
    if step_mode == "m":
        got = (node(currents), node.v_seq)
    else:
        steps = [(node(current), node.v.clone()) for current in currents]
        got = (torch.stack([s for s, _ in steps]), torch.stack([v for _, v in steps]))
    assert_same_trace(got, run_core(spec, currents))


def test_norse_generic_cell_and_layer_run_it(make_currents) -> None:
    require("norse")
    from snn_encodings.adapters.norse import Cell, Neurons

    spec = PlainIF(steps=10)
    currents = make_currents((2, 5), steps=10)
    want = run_core(spec, currents)
    spikes, states = Neurons(spec, record_states=True)(currents)
    assert_same_trace((spikes, states[0]), want)
    cell, state, cell_spikes = Cell(spec), None, []
    for current in currents:
        out, state = cell(current, state)
        cell_spikes.append(out)
    assert torch.equal(torch.stack(cell_spikes), want.spikes)
