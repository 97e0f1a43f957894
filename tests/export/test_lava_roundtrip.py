"""Real Lava (lava-nc 0.10 / lava-dl 0.6, fixed_pt) runs our files exactly as the fixed-point model.

Runs in the separate venv built by ``bash .ci/lava_env.sh``; skipped without it, failed under
SNN_ENCODINGS_REQUIRE_LAVA=1.
"""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader, TensorDataset

import snn_encodings as se
from snn_encodings.export.converted import encode_inputs
from snn_encodings.export.fixed_point import run_fixed_point
from snn_encodings.export.lowering import FloatLayer, FloatNetwork, decode_output
from snn_encodings.export.netx import netx, write_netx
from snn_encodings.export.netx_read import read_netx
from snn_encodings.specs import ICRate

pytestmark = pytest.mark.lava


def assert_lava_matches_file(lava, path, data):
    network = read_netx(path)
    inputs = network.drive(data)
    want = run_fixed_point(network, inputs)
    got = lava(path, inputs)
    assert want.wrapped == 0
    assert got["spikes"].shape == want.output.shape
    assert np.array_equal(got["spikes"], want.output)
    assert np.array_equal(got["u"], want.u[-1])
    assert np.array_equal(got["v"], want.v[-1])
    return want


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_lava_runs_hand_built_network_like_fixed_point(kind, lava, nets, tmp_path):
    net = nets[kind]()
    write_netx(net, tmp_path / f"{kind}.net")
    run = assert_lava_matches_file(
        lava, tmp_path / f"{kind}.net", nets["spikes"](net.data_shape, 16)
    )
    assert run.output.any()


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lava_runs_icrate_export_like_fixed_point(reset, lava, tmp_path):
    rng = np.random.default_rng(7)
    net = FloatNetwork(
        spec=ICRate(steps=12, input_coding="sigma_delta"),
        input_shape=(8,),
        layers=(
            FloatLayer(
                kind="dense",
                name="fc1",
                weight=rng.normal(0, 0.5, (10, 8)),
                bias=rng.normal(0.1, 0.6, 10),
            ),
            FloatLayer(
                kind="dense",
                name="fc2",
                weight=rng.normal(0, 0.5, (3, 10)),
                bias=rng.normal(0, 0.1, 3),
            ),
        ),
    )
    netx(net, tmp_path / "ic.net", reset=reset)
    run = assert_lava_matches_file(
        lava, tmp_path / "ic.net", (rng.random((12, 8)) < 0.5).astype(np.int8)
    )
    assert run.output.any()


@pytest.mark.parametrize(
    ("options", "count"),
    [({"unroll_conv": True}, 1), ({"reset": "zero"}, 2)],
    ids=["subtract-unrolled", "zero-conv"],
)
def test_lava_runs_exported_mnist_convnet_like_fixed_point(
    options, count, lava, trained_ann, mnist_calibration, mnist_eval, tmp_path
):
    calibration = DataLoader(TensorDataset(mnist_calibration.tensors[0][:500]), batch_size=250)
    network = se.convert(
        trained_ann, ICRate(steps=16, input_coding="sigma_delta", init="data"), calibration
    )
    x = mnist_eval.tensors[0][:count]
    netx(network, tmp_path / "convnet.net", **options)
    back = read_netx(tmp_path / "convnet.net")
    spikes = encode_inputs(network, x)
    inputs = np.stack(
        [back.drive(sample.reshape(sample.shape[0], *back.data_shape)) for sample in spikes]
    )
    got = lava(tmp_path / "convnet.net", inputs, batch=True)
    for i in range(count):
        want = run_fixed_point(back, inputs[i])
        assert want.wrapped == 0
        assert np.array_equal(got["spikes"][i], want.output)
        assert np.array_equal(got["u"][i], want.u[-1])
        assert np.array_equal(got["v"][i], want.v[-1])
        assert np.array_equal(
            decode_output(back, got["spikes"][i], got["v"][i]),
            decode_output(back, want.output, want.v[-1]),
        )
