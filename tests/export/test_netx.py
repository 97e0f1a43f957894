"""netx writer and reader: round trip, refusals with reasons, atomic files."""

from __future__ import annotations

import dataclasses
import importlib
import os

import numpy as np
import pytest
from torch import nn

from snn_encodings.errors import ExportError

netx_module = importlib.import_module("snn_encodings.export.netx")
from snn_encodings.export.fixed_point import run_fixed_point
from snn_encodings.export.layers import IntNetwork
from snn_encodings.export.lowering import FloatLayer, FloatNetwork, run_float
from snn_encodings.export.netx import netx, write_netx
from snn_encodings.export.netx_read import read_netx
from snn_encodings.specs import ICRate, Radix

pytest.importorskip("h5py")


def same_layers(a: IntNetwork, b: IntNetwork) -> None:
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        assert (x.kind, tuple(x.shape), x.name) == (y.kind, tuple(y.shape), y.name)
        for key in ("weight", "weight_rec", "bias", "delay"):
            assert (getattr(x, key) is None) == (getattr(y, key) is None), key
            if getattr(x, key) is not None:
                assert np.array_equal(getattr(x, key), getattr(y, key)), key
        if x.neuron is not None:
            for key in ("v_th_mant", "i_decay", "v_decay"):
                assert getattr(x.neuron, key) == getattr(y.neuron, key)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_netx_write_read_roundtrip(kind, nets, tmp_path):
    net = nets[kind]()
    write_netx(net, tmp_path / "net.net")
    back = read_netx(tmp_path / "net.net")
    same_layers(net, back)
    x = net.drive(nets["spikes"](net.data_shape, 10))
    assert np.array_equal(run_fixed_point(back, x).output, run_fixed_point(net, x).output)


def test_netx_export_rejects_weight_overflow(nets, tmp_path):
    net = nets["dense"]()
    layers = list(net.layers)
    layers[3] = dataclasses.replace(
        layers[3], weight=layers[3].weight * 0 + 300 * np.eye(3, 4, dtype=int) - 1
    )
    with pytest.raises(
        ExportError, match=r"layer 3 .*'fc3'.*weight 299 is outside netx's 8-bit range"
    ):
        write_netx(dataclasses.replace(net, layers=tuple(layers)), tmp_path / "x.net")
    assert list(tmp_path.iterdir()) == []


def test_netx_export_rejects_float_weights_and_bias_overflow(nets, tmp_path):
    net = nets["dense"]()
    layers = list(net.layers)
    bad = dataclasses.replace(
        net, layers=(*layers[:3], dataclasses.replace(layers[3], weight=layers[3].weight * 0.5))
    )
    with pytest.raises(ExportError, match="weights must be integers"):
        write_netx(bad, tmp_path / "x.net")
    bad = dataclasses.replace(
        net, layers=(*layers[:3], dataclasses.replace(layers[3], bias=np.array([5000, 0, 0])))
    )
    with pytest.raises(ExportError, match="bias 5000 is outside Loihi's 13-bit range"):
        write_netx(bad, tmp_path / "x.net")


def test_netx_export_rejects_all_zero_weights(nets, tmp_path):
    net = nets["dense"]()
    layers = list(net.layers)
    layers[1] = dataclasses.replace(layers[1], weight=np.zeros((5, 6), dtype=int))
    with pytest.raises(ExportError, match="'fc1'.*all weights are zero; netx cannot load"):
        write_netx(dataclasses.replace(net, layers=tuple(layers)), tmp_path / "x.net")


def test_netx_export_rejects_weights_lava_would_truncate(tmp_path, nets):
    # an odd mixed-sign feed-forward matrix next to an all-negative recurrent one: Lava would
    # truncate the recurrent synapse with a negative shift, so the file would compute something else
    from snn_encodings.export.layers import Layer

    net = IntNetwork(
        layers=(
            Layer(kind="input", shape=(2,)),
            Layer(
                kind="dense_rec",
                shape=(2,),
                name="rec",
                weight=np.array([[254, -5], [7, 1]]),
                weight_rec=np.array([[-10, 0], [0, -10]]),
                neuron=nets["cuba"](),
            ),
        )
    )
    with pytest.raises(
        ExportError, match="'rec'.*would not load these weights exactly.*even weights"
    ):
        write_netx(net, tmp_path / "x.net")


def test_netx_export_unwritable_path_raises_and_leaves_nothing(nets, tmp_path):
    with pytest.raises(ExportError, match="cannot write"):
        write_netx(nets["dense"](), tmp_path / "missing" / "net.net")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="cannot write"):
        write_netx(nets["dense"](), tmp_path / "taken")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_netx_export_failure_midway_keeps_old_file(nets, tmp_path, monkeypatch):
    target = tmp_path / "net.net"
    target.write_bytes(b"old")

    def broken(group, layer):
        raise RuntimeError("disk full")

    monkeypatch.setattr(netx_module, "_write_layer", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_netx(nets["dense"](), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["net.net"]


def test_netx_rejects_plain_torch_module(tmp_path):
    with pytest.raises(ExportError, match=r"plain torch module \(Linear\).*snn_encodings.convert"):
        netx(nn.Linear(3, 2), tmp_path / "x.net")


def icrate_net(layers, spec=None, shape=(6,)):
    return FloatNetwork(
        spec=spec or ICRate(steps=8, input_coding="sigma_delta"),
        input_shape=shape,
        layers=tuple(layers),
    )


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("max_pool", "max-pooling is not loadable by netx"),
        ("avg_pool", "fold average pooling into the next conv"),
    ],
)
def test_netx_rejects_pooling_naming_the_layer(kind, fragment, tmp_path):
    net = icrate_net(
        [FloatLayer(kind=kind, name="pool1"), FloatLayer(kind="dense", weight=np.ones((2, 6)))]
    )
    with pytest.raises(ExportError, match=f"'pool1'.*{fragment}"):
        netx(net, tmp_path / "x.net")


def test_netx_icrate_conv_needs_zero_reset(tmp_path):
    conv = FloatLayer(kind="conv", name="conv1", weight=np.ones((2, 1, 3, 3)) / 9)
    net = icrate_net(
        [conv, FloatLayer(kind="flatten"), FloatLayer(kind="dense", weight=np.ones((3, 32)) / 32)],
        shape=(1, 6, 6),
    )
    with pytest.raises(ExportError, match="'conv1'.*dense_rec.*reset='zero'"):
        netx(net, tmp_path / "x.net")
    report = netx(net, tmp_path / "y.net", reset="zero")
    assert "residual" in report.notes[0]


def test_netx_icrate_analog_input_is_refused(tmp_path):
    net = icrate_net([FloatLayer(kind="dense", weight=np.ones((2, 6)))], spec=ICRate(steps=8))
    with pytest.raises(ExportError, match="input_coding='sigma_delta'"):
        netx(net, tmp_path / "x.net")


def test_netx_signed_icrate_is_refused(tmp_path):
    spec = ICRate(steps=8, input_coding="sigma_delta", signed=True)
    net = icrate_net([FloatLayer(kind="dense", weight=np.ones((2, 6)))], spec=spec)
    with pytest.raises(ExportError, match="signed=True.*negative spikes"):
        netx(net, tmp_path / "x.net")
    assert not list(tmp_path.iterdir())


def test_netx_radix_is_refused_with_the_reason(tmp_path):
    net = icrate_net([FloatLayer(kind="dense", weight=np.ones((2, 6)))], spec=Radix())
    with pytest.raises(
        ExportError, match="radix cannot be exported.*reset by subtraction plus doubling"
    ):
        netx(net, tmp_path / "x.net")
    assert not os.listdir(tmp_path)


def grid_network(seed: int, grid: float = 32.0) -> FloatNetwork:
    """IC-rate MLP whose weights, biases and thresholds sit on an even integer grid."""
    rng = np.random.default_rng(seed)
    w1, w2 = 2 * rng.integers(-20, 40, (9, 6)), 2 * rng.integers(-40, 60, (4, 9))
    w1[0, 0] = w2[0, 0] = 254  # the largest weight sets the scale: 254 / max|w| = grid
    return icrate_net(
        [
            FloatLayer(
                kind="dense",
                name="fc1",
                weight=w1 / grid,
                bias=2 * rng.integers(-200, 300, 9) / grid,
            ),
            FloatLayer(
                kind="dense", name="fc2", weight=w2 / grid, bias=2 * rng.integers(-10, 20, 4) / grid
            ),
        ],
        spec=ICRate(steps=16, input_coding="sigma_delta"),
    )


def exported_run(net: FloatNetwork, path, x, **options):
    report = netx(net, path, **options)
    back = read_netx(path)
    run = run_fixed_point(back, back.drive(x))
    latency = back.synapse_layers
    return (
        report,
        back,
        run,
        run.output[latency : latency + x.shape[0], : net.layers[-1].weight.shape[0]],
    )


def test_netx_icrate_file_equals_float_snn_on_the_grid(tmp_path):
    net = grid_network(0)
    x = (np.random.default_rng(1).random((16, 6)) < 0.5).astype(np.int8)
    report, back, run, out = exported_run(net, tmp_path / "ic.net", x)
    want, v_final = run_float(net, x)
    assert report.network.clock_inputs > 1  # bias beyond 254 split over clocks
    assert all(r.weight_error == 0 and r.bias_error == 0 for r in report.layers)
    assert run.wrapped == 0
    assert np.array_equal(out, want)
    # the pre-reset membrane u, minus the last spike's threshold, is the float membrane
    scale, theta = back.layers[-1].metadata["scale"], back.layers[-1].metadata["theta"]
    last = run.u[-1][:4] / 64 - theta * out[-1]
    assert np.allclose(last / scale, v_final)


def test_netx_icrate_off_grid_stays_within_quantisation(tmp_path):
    rng = np.random.default_rng(5)
    net = icrate_net(
        [
            FloatLayer(
                kind="dense",
                name="fc1",
                weight=rng.normal(0, 0.4, (12, 6)),
                bias=rng.normal(0, 0.05, 12),
            ),
            FloatLayer(kind="dense", name="fc2", weight=rng.normal(0, 0.4, (3, 12))),
        ],
        spec=ICRate(steps=16, input_coding="sigma_delta"),
    )
    x = (rng.random((16, 6)) < 0.5).astype(np.int8)
    report, _, _, out = exported_run(net, tmp_path / "ic.net", x)
    want, _ = run_float(net, x)
    assert all(r.weight_error <= 1 / r.scale for r in report.layers)  # even grid: half-step 1/scale
    # spike counts (the decoded rate) move by at most a couple of spikes out of 16
    assert np.abs(out.sum(0) - want.sum(0)).max() <= 2
