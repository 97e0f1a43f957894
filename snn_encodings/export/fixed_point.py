r"""A numpy model of what Lava's fixed-point simulator computes for a netx file.

It runs an :class:`~snn_encodings.export.layers.IntNetwork` (normally the one
:func:`~snn_encodings.export.netx_read.read_netx` read back from the file) step by step with the
semantics of lava-nc 0.10 / lava-dl 0.6 (``Loihi2SimCfg(select_tag="fixed_pt")``):

- every synapse (dense, dense_rec, conv) has one step of latency: the input a layer receives at
  step :math:`t` is computed from the previous layer's spikes at :math:`t - 1 - d` (``d`` the
  synaptic delay, 0 without one); the recurrent weights of ``dense_rec`` likewise see the
  layer's own spikes at :math:`t - 1`;
- the input layer emits column :math:`t` of the input at step :math:`t` (netx's RingBuffer
  source), so an output spike at step :math:`t` comes from input step :math:`t - L` with
  :math:`L` synaptic layers;
- CUBA neurons as documented on :class:`~snn_encodings.export.layers.Cuba` (truncation toward
  zero in the decays, x64 state units, bias added to ``v``, strict threshold, reset of ``v`` to
  zero, ``u`` not reset, ``u`` wrapping at :math:`2^{23}` and ``v`` saturating, exactly as Lava);
- conv is cross-correlation (``torch.nn.functional.conv2d``), flatten is CHW order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from snn_encodings.errors import ExportError
from snn_encodings.export.layers import DECAY_UNITY, IntNetwork, Layer, check_network

__all__ = ["FixedPointRun", "run_fixed_point"]

_UV_MAX = 2**23
_SHIFT = 6


class FixedPointRun(NamedTuple):
    """Result of :func:`run_fixed_point`.

    Attributes:
        spikes: per layer (index as in the network; ``None`` for input and flatten layers)
            ``(steps, *shape)`` int8 spikes.
        u: per layer the final ``u`` (x64 units, CHW), ``None`` without a neuron.
        v: per layer the final ``v`` likewise.
        wrapped: number of times some ``u`` wrapped around its 24-bit range (Lava does so
            silently; a nonzero count means the run is not what the float network computes).
    """

    spikes: list[np.ndarray | None]
    u: list[np.ndarray | None]
    v: list[np.ndarray | None]
    wrapped: int

    @property
    def output(self) -> np.ndarray:
        """Spikes of the last layer, ``(steps, *shape)``."""
        last = self.spikes[-1]
        assert last is not None  # guaranteed by check_network: the last layer has a synapse
        return last


def run_fixed_point(
    network: IntNetwork, inputs: np.ndarray, *, check: bool = True
) -> FixedPointRun:
    """Run ``network`` on ``inputs`` for ``len(inputs)`` steps, bit-exactly as Lava's CPU model.

    Args:
        network: the integer network (see :func:`~snn_encodings.export.netx_read.read_netx`).
        inputs: ``(steps, *input_shape)`` 0/1 spikes for the full input layer (with clock
            channels; :meth:`IntNetwork.drive` builds it from data spikes).
        check: validate ``network`` with :func:`check_network` first (for many inputs on one
            network, check it once and pass ``False``: the check scans every weight).
    Returns:
        A :class:`FixedPointRun`.
    Raises:
        ExportError: if the network is invalid or ``inputs`` has the wrong shape.
    Example:
        >>> from snn_encodings.export.layers import Cuba, Layer
        >>> net = IntNetwork(layers=(Layer(kind="input", shape=(1,)), Layer(kind="dense",
        ...     shape=(1,), weight=np.array([[3]]), neuron=Cuba(v_th_mant=5, i_decay=4096,
        ...     v_decay=0))))
        >>> run_fixed_point(net, np.ones((6, 1), dtype=np.int8)).output[:, 0].tolist()
        [0, 0, 1, 0, 1, 0]
    """
    if check:
        check_network(network)
    inputs = np.asarray(inputs)
    if tuple(inputs.shape[1:]) != tuple(network.layers[0].shape):
        raise ExportError(
            f"run_fixed_point: inputs must be shaped (steps, {network.layers[0].shape}), got "
            f"{inputs.shape}"
        )
    train = inputs.astype(np.int64)
    spikes: list[np.ndarray | None] = [None]
    us: list[np.ndarray | None] = [None]
    vs: list[np.ndarray | None] = [None]
    wrapped = 0
    for layer in network.layers[1:]:
        if layer.kind == "flatten":
            train = train.reshape(train.shape[0], -1)
            spikes.append(None)
            us.append(None)
            vs.append(None)
            continue
        out, u, v, count = _run_layer(layer, train)
        wrapped += count
        spikes.append(out.astype(np.int8))
        us.append(u)
        vs.append(v)
        train = out
    return FixedPointRun(spikes, us, vs, wrapped)


def _synaptic_input(layer: Layer, train: np.ndarray) -> np.ndarray:
    """Input a layer receives at every step from the previous layer's spikes ``train``."""
    steps = train.shape[0]
    weight = np.asarray(layer.weight, dtype=np.int64)
    # the input at step t comes from spikes at t - 1 - delay
    shifted = np.concatenate([np.zeros_like(train[:1]), train[:-1]])
    if layer.kind == "conv":
        return (
            np.stack([_conv(shifted[t], weight, layer) for t in range(steps)]) if steps else shifted
        )
    if layer.delay is None:
        return _matmul(shifted, weight.T)
    delay = np.asarray(layer.delay, dtype=np.int64)
    total = np.zeros((steps, weight.shape[0]), dtype=np.int64)
    for d in np.unique(delay):
        late = np.concatenate([np.zeros((min(d, steps), train.shape[1]), dtype=np.int64), shifted])[
            :steps
        ]
        total += late @ np.where(delay == d, weight, 0).T
    return total


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer ``a @ b``, through float64 BLAS when every partial sum is exact (below 2**53)."""
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * b.shape[0]
    if bound < 2.0**52:
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def _conv(x: np.ndarray, weight: np.ndarray, layer: Layer) -> np.ndarray:
    """Cross-correlation of one CHW frame, like ``torch.nn.functional.conv2d``."""
    (py, px), (sy, sx), (dy, dx) = layer.padding, layer.stride, layer.dilation
    padded = np.pad(x, ((0, 0), (py, py), (px, px)))
    out_c, in_per_group, kh, kw = weight.shape
    _, oh, ow = layer.shape
    groups = layer.groups
    out = np.zeros((out_c, oh, ow), dtype=np.int64)
    per_group_out = out_c // groups
    for g in range(groups):
        xs = padded[g * in_per_group : (g + 1) * in_per_group]
        ws = weight[g * per_group_out : (g + 1) * per_group_out]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[
                    :,
                    ky * dy : ky * dy + sy * (oh - 1) + 1 : sy,
                    kx * dx : kx * dx + sx * (ow - 1) + 1 : sx,
                ]
                out[g * per_group_out : (g + 1) * per_group_out] += np.einsum(
                    "oc,chw->ohw", ws[:, :, ky, kx], patch
                )
    return out


def _decay(x: np.ndarray, decay: int) -> np.ndarray:
    product = x * (DECAY_UNITY - decay)
    return np.sign(product) * (np.abs(product) >> 12)


def _run_layer(layer: Layer, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    neuron = layer.neuron
    assert neuron is not None  # checked by check_network
    shape = tuple(layer.shape)
    feed = _synaptic_input(layer, train)
    steps = train.shape[0]
    u = np.zeros(shape, dtype=np.int64) + (
        0 if neuron.u_init is None else np.asarray(neuron.u_init, dtype=np.int64)
    )
    v = np.zeros(shape, dtype=np.int64) + (
        0 if neuron.v_init is None else np.asarray(neuron.v_init, dtype=np.int64)
    )
    bias = np.zeros(shape, dtype=np.int64)
    if layer.bias is not None:
        b = np.asarray(layer.bias, dtype=np.int64)
        bias = bias + (b.reshape(-1, *([1] * (len(shape) - 1))) if b.ndim else b)
    bias = bias << _SHIFT
    threshold = int(neuron.v_th_mant) << _SHIFT
    rec = None if layer.weight_rec is None else np.asarray(layer.weight_rec, dtype=np.int64)
    diagonal = None
    if rec is not None and np.count_nonzero(rec) == np.count_nonzero(rec.diagonal()):
        diagonal, rec = rec.diagonal().copy(), None  # self-connections only: elementwise
    out = np.zeros((steps, *shape), dtype=np.int64)
    previous = np.zeros(shape, dtype=np.int64)
    wrapped = 0
    for t in range(steps):
        a = feed[t]
        if rec is not None:
            a = a + rec @ previous
        elif diagonal is not None:
            a = a + diagonal * previous
        current = _decay(u, neuron.i_decay) + (a << _SHIFT)
        # Lava's wrap, reproduced literally (its second branch starts from the unwrapped value)
        first = np.where(current > _UV_MAX, current - 2 * _UV_MAX, current)
        u = np.where(first <= -_UV_MAX, current + 2 * _UV_MAX, first)
        wrapped += int(np.count_nonzero(u != current))
        v = np.clip(_decay(v, neuron.v_decay) + u + bias, -_UV_MAX + 1, _UV_MAX - 1)
        fired = v > threshold
        v = np.where(fired, 0, v)
        out[t] = fired
        previous = fired.astype(np.int64)
    return out, u, v, wrapped
