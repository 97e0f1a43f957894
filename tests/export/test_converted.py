"""Exporting what ``snn_encodings.convert`` returns: the adapter, refusals, and the equivalence
chain on MNIST (float SNN -> file -> fixed-point model; file -> real Lava in test_lava_roundtrip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snn_encodings as se
from conftest import require
from snn_encodings.errors import ExportError
from snn_encodings.export import netx, read_netx
from snn_encodings.export.converted import encode_inputs, float_network
from snn_encodings.export.fixed_point import run_fixed_point
from snn_encodings.export.layers import check_network
from snn_encodings.export.lowering import decode_output, run_float, unroll_convolutions



@pytest.fixture(autouse=True)
def _needs_h5py() -> None:
    require("h5py")

SPEC = se.ICRate(steps=16, input_coding="sigma_delta", init="data")


def tiny_convnet(seed: int = 0, pool: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 3, 3, stride=2), nn.BatchNorm2d(3), nn.ReLU()]
    layers += [pool] if pool is not None else []
    size = 3 * 3 * 3 if pool is not None else 3 * 4 * 4
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(size, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def images(count: int, seed: int = 1) -> torch.Tensor:
    return torch.rand((count, 1, 9, 9), generator=torch.Generator().manual_seed(seed))


def converted(model: nn.Module, spec=SPEC) -> se.SpikingNetwork:
    return se.convert(model, spec, DataLoader(TensorDataset(images(64)), batch_size=32))


def float_decode(network, data: np.ndarray) -> np.ndarray:
    """The export view run in float64 and decoded as the converted network decodes."""
    spikes, v_final = run_float(network, data)
    spec = network.spec
    if network.readout == "membrane":
        v0 = spec.default_v0 if network.layers[-1].v0 is None else network.layers[-1].v0
        value = (spikes.sum(0) * spec.threshold + v_final - v0) / spec.steps
    else:
        value = spikes.sum(0) * spec.threshold / spec.steps
    return value * network.output_scale - network.output_offset


def test_float_network_reproduces_the_converted_network():
    net = converted(tiny_convnet())
    view = float_network(net)
    assert [layer.kind for layer in view.layers] == ["conv", "flatten", "dense", "dense"]
    assert view.readout == "membrane"
    assert np.ndim(view.layers[0].v0) == 3  # per-channel initial membranes (init="data")
    x = images(5, seed=3)
    spikes = encode_inputs(net, x)
    with torch.no_grad():
        want = net(x).double().numpy()
    got = np.stack([float_decode(view, spikes[i]) for i in range(len(x))])
    assert np.allclose(got, want, atol=1e-4)
    unrolled = unroll_convolutions(view)
    assert [layer.kind for layer in unrolled.layers] == ["dense", "dense", "dense"]
    flat = spikes.reshape(len(x), SPEC.steps, -1)
    again = np.stack([float_decode(unrolled, flat[i]) for i in range(len(x))])
    assert np.allclose(again, got, atol=1e-9)


def test_netx_accepts_converted_network_and_file_tracks_float_snn(tmp_path):
    net = converted(tiny_convnet())
    report = netx(net, tmp_path / "tiny.net", unroll_conv=True)
    assert "unrolled" in report.notes[0]
    back = read_netx(tmp_path / "tiny.net")
    assert [layer.kind for layer in back.layers] == ["input", "dense_rec", "dense_rec", "dense"]
    x = images(6, seed=4)
    spikes = encode_inputs(net, x).reshape(len(x), SPEC.steps, -1)
    with torch.no_grad():
        want = net(x).double().numpy()
    got = []
    for sample in spikes:
        run = run_fixed_point(back, back.drive(sample))
        assert run.wrapped == 0
        got.append(decode_output(back, run.output, run.v[-1]))
    # weights on an even grid of 2/scale threshold units: outputs move by a few grid steps
    scale = min(r.scale for r in report.layers)
    assert np.abs(np.array(got) - want).max() <= 40 / scale * float(
        np.max(net.output_scale.numpy())
    )


def test_netx_conv_with_subtractive_reset_names_the_unroll_option(tmp_path):
    net = converted(tiny_convnet())
    with pytest.raises(
        ExportError,
        match=r"layer '2' \(conv\).*dense_rec.*unroll_conv=True.*4,194 synapses instead of 333",
    ):
        netx(net, tmp_path / "x.net")
    assert list(tmp_path.iterdir()) == []


def test_netx_refuses_max_pool_stage_with_the_reason(tmp_path):
    net = converted(tiny_convnet(pool=nn.MaxPool2d(2, stride=1)))
    with pytest.raises(
        ExportError, match=r"'3' \(max-pooling\): netx cannot load pooling.*strided convolutions"
    ):
        netx(net, tmp_path / "x.net", reset="zero")


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(81, 8)
        self.fc2 = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(self.flatten(x)))
        return self.out(torch.relu(self.fc2(h) + h))


def test_netx_refuses_residual_connection_naming_the_layer(tmp_path):
    torch.manual_seed(0)
    net = converted(Residual().eval())
    with pytest.raises(
        ExportError, match=r"sum of 2 branches \(a residual or skip connection\).*without skip"
    ):
        netx(net, tmp_path / "x.net")


def test_netx_refuses_analog_icrate_input(tmp_path):
    net = converted(tiny_convnet(), se.ICRate(steps=8))
    with pytest.raises(ExportError, match="input_coding='sigma_delta'"):
        netx(net, tmp_path / "x.net", reset="zero")
    with pytest.raises(ExportError, match="real values, not spikes"):
        encode_inputs(net, images(2))


def test_netx_refuses_quartz_with_the_precise_reason(tmp_path):
    net = converted(tiny_convnet(), se.Quartz(t_max=8))
    with pytest.raises(
        ExportError, match=r"Quartz cannot be exported faithfully.*fire once.*rectifier"
    ):
        netx(net, tmp_path / "x.net")


def test_decode_output_raises_when_the_integrator_saturates(tmp_path):
    net = converted(tiny_convnet())
    report = netx(net, tmp_path / "tiny.net", unroll_conv=True)
    with pytest.raises(ExportError, match="integrator saturated"):
        decode_output(report.network, np.zeros((20, 3)), np.array([2**23 - 1, 0, 0]))


# --- the demo network on MNIST ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_network(trained_ann, mnist_calibration):
    calibration = DataLoader(TensorDataset(mnist_calibration.tensors[0][:500]), batch_size=250)
    # one scale per layer at the encoding's percentile: the hard-reset ("zero") export is an
    # approximation whose agreement on these 8 images was established with these scales
    return se.convert(trained_ann, SPEC, calibration, percentile="default", per_channel=False)


def fixed_point_outputs(back, spikes):
    check_network(back)
    runs = [
        run_fixed_point(
            back, back.drive(sample.reshape(sample.shape[0], *back.data_shape)), check=False
        )
        for sample in spikes
    ]
    assert all(run.wrapped == 0 for run in runs)
    return np.stack([decode_output(back, run.output, run.v[-1]) for run in runs])


@pytest.mark.parametrize(
    "options", [{"unroll_conv": True}, {"reset": "zero"}], ids=["subtract-unrolled", "zero-conv"]
)
def test_mnist_convnet_fixed_point_agrees_with_float_snn(
    options, mnist_network, mnist_eval, tmp_path
):
    x = mnist_eval.tensors[0][:8]
    report = netx(mnist_network, tmp_path / "convnet.net", **options)
    back = read_netx(tmp_path / "convnet.net")
    with torch.no_grad():
        want = mnist_network(x).double().numpy()
    got = fixed_point_outputs(back, encode_inputs(mnist_network, x))
    assert np.array_equal(got.argmax(1), want.argmax(1))
    if "unroll_conv" in options:
        # faithful construction: only the weight rounding (<= 1/scale) separates the two
        assert all(r.weight_error <= 1 / r.scale + 1e-12 for r in report.layers)
        assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
