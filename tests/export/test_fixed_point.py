"""The fixed-point model follows Lava's CUBA semantics, traced by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snn_encodings.errors import ExportError
from snn_encodings.export.fixed_point import run_fixed_point
from snn_encodings.export.layers import Cuba, IntNetwork, Layer


def one_neuron(weight: int, **cuba: int) -> IntNetwork:
    params = {"v_th_mant": 12, "i_decay": 4096, "v_decay": 0} | cuba
    bias = params.pop("bias", None)
    return IntNetwork(
        layers=(
            Layer(kind="input", shape=(1,)),
            Layer(
                kind="dense",
                shape=(1,),
                weight=np.array([[weight]]),
                bias=None if bias is None else np.array([bias]),
                neuron=Cuba(**params),
            ),
        )
    )


def pulse(steps: int, at: int = 0) -> np.ndarray:
    x = np.zeros((steps, 1), dtype=np.int8)
    x[at] = 1
    return x


def test_fixed_point_matches_hand_trace_of_cuba_step():
    # input spike at step 0 arrives at step 1 (one step of synaptic latency): u = 10 * 64;
    # u halves each step (iDecay 2048); v integrates u; spike when v > 12 * 64 (strict), v -> 0
    run = run_fixed_point(one_neuron(10, i_decay=2048), pulse(5))
    assert run.output[:, 0].tolist() == [0, 0, 1, 0, 0]
    assert run.u[-1].tolist() == [80]  # 640 -> 320 -> 160 -> 80: u is not reset by the spike
    assert run.v[-1].tolist() == [240]  # reset to 0 at step 2, then 160 + 80


def test_fixed_point_decay_truncates_toward_zero():
    # u = -3 * 64 halves each step: -192, -96, -48, -24, -12, -6, -3, then trunc0(-1.5) = -1
    run = run_fixed_point(one_neuron(-3, i_decay=2048, v_decay=4096), pulse(9))
    assert run.u[-1].tolist() == [-1]


def test_fixed_point_threshold_is_strict_and_bias_goes_to_v():
    # bias 4 per step with threshold 12: v = 4, 8, 12 (not > 12), 16 -> spike at step 3
    run = run_fixed_point(one_neuron(2, bias=4), np.zeros((5, 1), dtype=np.int8))
    assert run.output[:, 0].tolist() == [0, 0, 0, 1, 0]


def test_fixed_point_latency_is_one_step_per_synapse_plus_delay():
    big = Cuba(v_th_mant=0, i_decay=4096, v_decay=4096)
    net = IntNetwork(
        layers=(
            Layer(kind="input", shape=(1,)),
            Layer(
                kind="dense",
                shape=(3,),
                weight=np.array([[1], [1], [1]]),
                delay=np.array([[0], [3], [7]]),
                neuron=big,
            ),
            Layer(kind="dense", shape=(1,), weight=np.array([[1, 0, 0]]), neuron=big),
        )
    )
    run = run_fixed_point(net, pulse(12, at=1))
    assert np.flatnonzero(run.spikes[1][:, 0]).tolist() == [2]
    assert np.flatnonzero(run.spikes[1][:, 1]).tolist() == [5]
    assert np.flatnonzero(run.spikes[1][:, 2]).tolist() == [9]
    assert np.flatnonzero(run.output[:, 0]).tolist() == [3]


def test_fixed_point_recurrent_weight_acts_one_step_after_the_spike():
    net = IntNetwork(
        layers=(
            Layer(kind="input", shape=(1,)),
            Layer(
                kind="dense_rec",
                shape=(1,),
                weight=np.array([[20]]),
                weight_rec=np.array([[-254]]),
                neuron=Cuba(v_th_mant=30, i_decay=0, v_decay=0),
            ),
        )
    )
    # u ramps at 20/step from step 1; v = 20, 60, 120 > 30 fires at step 2; the self-weight
    # reaches u at step 3 and keeps it negative: the neuron fires exactly once
    run = run_fixed_point(net, pulse(10))
    assert np.flatnonzero(run.output[:, 0]).tolist() == [2]


def test_fixed_point_conv_is_cross_correlation_like_torch(nets):
    rng = np.random.default_rng(3)
    weight = rng.integers(-9, 9, (3, 2, 3, 2))
    net = IntNetwork(
        layers=(
            Layer(kind="input", shape=(2, 5, 6)),
            Layer(
                kind="conv",
                shape=(3, 3, 3),
                weight=weight,
                stride=(2, 2),
                padding=(1, 0),
                neuron=Cuba(v_th_mant=131071, i_decay=4096, v_decay=4096),
            ),
        )
    )
    frame = (rng.random((2, 5, 6)) < 0.5).astype(np.int8)
    run = run_fixed_point(net, np.stack([frame, np.zeros_like(frame)]))
    want = torch.nn.functional.conv2d(
        torch.tensor(frame[None], dtype=torch.float64),
        torch.tensor(weight, dtype=torch.float64),
        stride=2,
        padding=(1, 0),
    )
    assert np.array_equal(run.u[1], want[0].numpy().astype(np.int64) * 64)


def test_fixed_point_rejects_wrong_input_shape(nets):
    with pytest.raises(ExportError, match="inputs must be shaped"):
        run_fixed_point(nets["dense"](), np.zeros((4, 7), dtype=np.int8))
