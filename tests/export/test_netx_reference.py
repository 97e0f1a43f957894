"""netx files against float simulations on real MNIST inputs, for both reset modes.

The float side is written here, from the converted network's export view (float weights,
biases, initial membranes) and the neuron each mode defines: integrate-and-fire with reset by
subtraction (the converted network's own neuron) or reset to zero (Lava's native neuron). The
file side is the integer network read back from disk, run bit-exactly by the fixed-point model
and decoded with the file's own metadata (latency window, scales). Nothing of the lowering is
shared, so a wrong latency, threshold or weight scale in the file shows up as different counts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import snn_encodings as se
from conftest import require
from snn_encodings.export import netx, read_netx
from snn_encodings.export.converted import encode_inputs, float_network
from snn_encodings.export.fixed_point import run_fixed_point
from snn_encodings.export.lowering import decode_output

SPEC = se.ICRate(steps=16, input_coding="sigma_delta", init="data", compensate=False)
IMAGES = 12


@pytest.fixture(scope="module")
def mnist_network(trained_ann, mnist_calibration):
    calibration = DataLoader(TensorDataset(mnist_calibration.tensors[0][:500]), batch_size=250)
    return se.convert(trained_ann, SPEC, calibration)


def _float_counts(network: se.SpikingNetwork, spikes: np.ndarray, reset: str) -> np.ndarray:
    """Output spike counts ``(B, K)`` of the float IF network with the given reset."""
    view = float_network(network)
    train = torch.as_tensor(spikes, dtype=torch.float64).transpose(0, 1)  # (T, B, *)
    for layer in view.layers:
        if layer.kind == "flatten":
            train = train.flatten(2)
            continue
        weight = torch.as_tensor(layer.weight, dtype=torch.float64)
        flat = train.flatten(0, 1)
        if layer.kind == "dense":
            current = flat @ weight.T
        else:
            current = torch.nn.functional.conv2d(
                flat, weight, stride=layer.stride, padding=layer.padding,
                dilation=layer.dilation, groups=layer.groups,
            )
        current = current.unflatten(0, train.shape[:2])
        if layer.bias is not None:
            bias = torch.as_tensor(layer.bias, dtype=torch.float64)
            current = current + bias.view(-1, *([1] * (current.dim() - 3)))
        v0 = torch.as_tensor(SPEC.default_v0 if layer.v0 is None else layer.v0, dtype=torch.float64)
        v = torch.zeros_like(current[0]) + v0
        out = []
        for step in current:
            v = v + step
            fired = (v >= SPEC.threshold).to(torch.float64)
            v = v - fired * SPEC.threshold if reset == "subtract" else v * (1 - fired)
            out.append(fired)
        train = torch.stack(out)
    return train.sum(0).numpy()


@pytest.mark.parametrize(
    ("reset", "options", "agreement"),
    [("subtract", {"unroll_conv": True}, 0.85), ("zero", {"reset": "zero"}, 0.9)],
    ids=["subtract", "zero"],
)
def test_netx_file_counts_equal_the_float_network_on_mnist(
    mnist_network, mnist_eval, tmp_path, reset, options, agreement
):
    """Weight rounding (<= 1/scale per weight) is all that separates file and float network:
    nearly every output count is equal, and decoded outputs agree to one count."""
    require("h5py")
    x = mnist_eval.tensors[0][:IMAGES]
    spikes = encode_inputs(mnist_network, x)
    netx(mnist_network, tmp_path / "net.h5", **options)
    back = read_netx(tmp_path / "net.h5")
    latency = int(back.metadata["latency"])
    outputs = back.layers[-1].shape[0] - int(back.layers[-1].metadata.get("relays", 0))
    counts = []
    decoded = []
    for sample in spikes:
        steps = sample.reshape(sample.shape[0], *back.data_shape)
        run = run_fixed_point(back, back.drive(steps), check=False)
        window = run.output[latency : latency + SPEC.steps]
        counts.append(window.sum(0)[:outputs])
        decoded.append(decode_output(back, run.output, run.v[-1]))
    got = np.stack(counts)
    want = _float_counts(mnist_network, spikes, reset)
    assert got.shape == want.shape
    assert (got == want).mean() >= agreement, (got == want).mean()
    assert np.abs(got - want).max() <= 1
    scale = np.asarray(mnist_network.output_scale, dtype=np.float64)
    expected = want * SPEC.threshold / SPEC.steps * scale - float(mnist_network.output_offset)
    one_count = scale.max() * SPEC.threshold / SPEC.steps
    assert np.abs(np.stack(decoded) - expected).max() <= one_count * (1 + 1e-9)


def test_netx_zero_reset_file_matches_the_float_network_layer_by_layer(mnist_network, tmp_path):
    """Per layer: one step of latency (each Lava synapse delays by one step), and weights in
    threshold units equal to the float network's up to the rounding of weight and threshold
    to integers (|w_int * theta - w * theta_int| <= (theta + |w|) / 2)."""
    require("h5py")
    netx(mnist_network, tmp_path / "net.h5", reset="zero")
    back = read_netx(tmp_path / "net.h5")
    view = [layer for layer in float_network(mnist_network).layers if layer.kind != "flatten"]
    written = [layer for layer in back.layers if layer.weight is not None]
    assert int(back.metadata["latency"]) == len(view) == len(written)
    for float_layer, layer in zip(view, written):
        theta_int = int(layer.metadata["theta"])
        w = np.asarray(float_layer.weight, dtype=np.float64)
        w_int = np.asarray(layer.weight, dtype=np.float64).reshape(w.shape)
        slack = w_int * SPEC.threshold - w * theta_int
        assert np.all(np.abs(slack) <= (SPEC.threshold + np.abs(w)) / 2 + 1e-9), layer.name
