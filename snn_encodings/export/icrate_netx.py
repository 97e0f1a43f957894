r"""The netx lowering of the IC-rate encoding (its record's ``netx``); see :mod:`.lowering`.

:func:`lower_icrate` builds the integer layers for either reset: ``"subtract"`` (faithful: the
membrane lives in ``u``, a ``dense_rec`` self-weight :math:`-\theta` subtracts the threshold,
biases arrive from clock channels relayed layer by layer) or ``"zero"`` (Lava's native reset, an
approximation). The module docstring of :mod:`snn_encodings.export.lowering` gives the
construction and its limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from snn_encodings.errors import ExportError
from snn_encodings.export.layers import BIAS_RANGE, VTH_MAX, Cuba, IntNetwork, Layer
from snn_encodings.export.lowering import (
    WEIGHT_MAX,
    FloatLayer,
    FloatNetwork,
    LayerReport,
    chain,
    even,
    float_bias,
    float_weight,
    layer_report,
    metadata,
    output_shape,
    synapse_count,
    unroll_convolutions,
    v0_map,
    weight_scale,
)

__all__ = ["lower_icrate"]

Lowered = tuple[IntNetwork, tuple[LayerReport, ...], tuple[str, ...]]


def lower_icrate(network: FloatNetwork, reset: str) -> Lowered:
    """The netx layers of an IC-rate network (``network.spec`` is an ``ICRate``).

    Args:
        network: the converted network, sigma-delta input coding.
        reset: ``"subtract"`` or ``"zero"`` (checked by :func:`~.lowering.lower`).
    Returns:
        ``(int_network, layer_reports, notes)``.
    Raises:
        ExportError: for analog input coding, signed neurons, or a layer the chosen reset
            cannot express.
    """
    spec = network.spec
    if spec.signed:  # type: ignore[attr-defined]
        raise ExportError(
            "export.netx: ICRate(signed=True) neurons send negative spikes and keep a net spike "
            "count, which netx's binary-spike CUBA neurons do not have (convert chooses them "
            "where plain neurons lose the twin's decisions); convert with ICRate(signed=False) "
            "to export"
        )
    if spec.input_coding != "sigma_delta":  # type: ignore[attr-defined]
        raise ExportError(
            "export.netx: ICRate(input_coding='analog') feeds the first layer real values, but "
            "Loihi inputs are spikes (netx's graded input_message_bits is not a file field and "
            "our Lava check does not cover it); convert with ICRate(input_coding='sigma_delta')"
        )
    theta = float(spec.threshold)  # type: ignore[attr-defined]
    shape, layers = chain(network)
    if reset == "subtract":
        return _lower_subtract(network, shape, layers, theta)
    return _lower_zero(network, shape, layers, theta)


def _integrator(start: np.ndarray | None = None) -> Cuba:
    """A non-spiking accumulator: ``u`` is this step's input, ``v`` sums it (and the bias)."""
    return Cuba(v_th_mant=VTH_MAX, i_decay=4096, v_decay=0, v_init=start)


def _readout_note(scale: float, network: FloatNetwork) -> str:
    steps = network.spec.steps_per_layer
    return (
        "output layer: a non-spiking integrator (iDecay=4096, vDecay=0, vThMant=131071) read as "
        "membrane v; decode with decode_output; |mean output| above "
        f"{VTH_MAX / (scale * steps):.3g} "
        "threshold units saturates v (decode_output raises)"
    )


# --- reset by subtraction ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Quantised:
    """One dense layer on the integer grid of its scale (reset by subtraction)."""

    layer: FloatLayer
    weight: np.ndarray
    scale: float
    bias: np.ndarray
    bias_int: np.ndarray

    def report(self, v0: np.ndarray, v0_int: np.ndarray) -> LayerReport:
        w_int = even(self.weight * self.scale)
        return layer_report(
            self.layer.name, self.scale, self.weight, w_int, self.bias, self.bias_int, v0, v0_int
        )


def _check_subtract(
    network: FloatNetwork, shape: tuple[int, ...], layers: list[FloatLayer]
) -> None:
    for layer in layers:
        if layer.kind != "dense":
            dense, conv = synapse_count(unroll_convolutions(network)), synapse_count(network)
            raise ExportError(
                f"export.netx: layer {layer.name!r} ({layer.kind}): IC-rate's reset by subtraction "
                "needs a recurrent self-connection (dense_rec), which netx has for dense layers "
                "only; export with unroll_conv=True (faithful: the convs become dense layers, "
                f"{dense:,} "
                f"synapses instead of {conv:,}) or reset='zero' (Lava's native reset to zero, an "
                "approximation whose accuracy the caller should measure)"
            )
    if len(shape) != 1:
        raise ExportError(
            "export.netx: IC-rate with reset='subtract' needs a flat input; start the network with "
            "a flatten"
        )


def _quantise_subtract(layers: list[FloatLayer], theta: float, membrane: bool) -> list[_Quantised]:
    """Scales and even integer biases per layer.

    Even integers: Lava truncates the recurrent (all-negative) synapse with the bit budget of the
    mixed-sign feed-forward one, which is exact only for even weights (also Loihi's grid); a
    membrane readout has no recurrent synapse and no threshold to fit, only its weights.
    """
    last = len(layers) - 1
    quantised = []
    for k, layer in enumerate(layers):
        weight = float_weight(layer)
        limit = math.inf if membrane and k == last else WEIGHT_MAX
        scale = weight_scale(weight, theta, limit)
        bias = float_bias(layer, weight)
        quantised.append(_Quantised(layer, weight, scale, bias, even(bias * scale)))
    return quantised


def _clock_chunks(bias_int: np.ndarray, clocks: int) -> np.ndarray:
    """Split integer biases ``(out,)`` over ``clocks`` synapses of at most ``WEIGHT_MAX`` each."""
    chunks = np.zeros((bias_int.shape[0], clocks), dtype=np.int64)
    rest = bias_int.copy()
    for m in range(clocks):
        chunks[:, m] = np.clip(rest, -WEIGHT_MAX, WEIGHT_MAX)
        rest = rest - chunks[:, m]
    return chunks


def _membrane_readout(
    q: _Quantised, chunks: np.ndarray, v0: np.ndarray
) -> tuple[Layer, LayerReport]:
    """Compensated readout (count + residual - v0) = sum of the input currents: integrate."""
    w_int = even(q.weight * q.scale)
    layer = Layer(
        kind="dense",
        shape=(q.weight.shape[0],),
        name=q.layer.name,
        weight=np.concatenate([w_int, chunks], axis=1),
        neuron=_integrator(),
        metadata={"scale": q.scale, "readout": "membrane"},
    )
    return layer, q.report(v0, np.rint(v0 * q.scale))


def _recurrent(
    q: _Quantised, chunks: np.ndarray, v0: np.ndarray, theta: float, relays: int
) -> tuple[Layer, LayerReport]:
    """A ``dense_rec`` layer holding the membrane in ``u``, plus ``relays`` clock relays."""
    out, n_in = q.weight.shape
    clocks = chunks.shape[1]
    theta_int = int(even(np.asarray(theta * q.scale)))
    if theta_int < 2:
        raise ExportError(
            f"export.netx: layer {q.layer.name!r}: threshold rounds to 0 at scale {q.scale:.3g}; "
            "rescale the layer"
        )
    weight = np.zeros((out + relays, n_in + clocks), dtype=np.int64)
    weight[:out, :n_in] = even(q.weight * q.scale)
    weight[:out, n_in:] = chunks
    weight[out:, n_in:] = np.eye(relays, clocks, dtype=np.int64) * theta_int
    v0_int = np.rint(v0 * q.scale).astype(np.int64)
    u_init = np.concatenate([v0_int, np.zeros(relays, dtype=np.int64)]) << 6
    layer = Layer(
        kind="dense_rec",
        shape=(out + relays,),
        name=q.layer.name,
        weight=weight,
        weight_rec=-theta_int * np.eye(out + relays, dtype=np.int64),
        neuron=Cuba(v_th_mant=theta_int - 1, i_decay=0, v_decay=4096, u_init=u_init),
        metadata={"scale": q.scale, "relays": relays, "theta": theta_int},
    )
    return layer, q.report(v0, v0_int)


def _lower_subtract(
    network: FloatNetwork, shape: tuple[int, ...], layers: list[FloatLayer], theta: float
) -> Lowered:
    _check_subtract(network, shape, layers)
    membrane = network.readout == "membrane"
    quantised = _quantise_subtract(layers, theta, membrane)
    clocks = max(
        (math.ceil(np.abs(q.bias_int).max() / WEIGHT_MAX) for q in quantised if q.bias_int.any()),
        default=0,
    )
    int_layers = [Layer(kind="input", shape=(shape[0] + clocks,), name="input")]
    reports = []
    last = len(quantised) - 1
    for k, q in enumerate(quantised):
        out, n_in = q.weight.shape
        if n_in != int_layers[-1].shape[0] - clocks:
            raise ExportError(
                f"export.netx: layer {q.layer.name!r}: weight has {n_in} inputs, the previous "
                f"layer {int_layers[-1].shape[0] - clocks} outputs"
            )
        chunks = _clock_chunks(q.bias_int, clocks)
        v0 = v0_map(q.layer, network.spec, (out,))
        if membrane and k == last:
            layer, report = _membrane_readout(q, chunks, v0)
        else:
            layer, report = _recurrent(q, chunks, v0, theta, clocks if k < last else 0)
        int_layers.append(layer)
        reports.append(report)
    notes = _subtract_notes(clocks, quantised[-1].scale if membrane else None, network)
    meta = metadata(network, len(layers), "subtract")
    return (
        IntNetwork(layers=tuple(int_layers), metadata=meta, clock_inputs=clocks),
        tuple(reports),
        notes,
    )


def _subtract_notes(
    clocks: int, readout_scale: float | None, network: FloatNetwork
) -> tuple[str, ...]:
    notes: tuple[str, ...] = (
        (
            "IC-rate reset by subtraction: membrane held in u (iDecay=0, vDecay=4096) with a "
            "dense_rec self-weight -theta; vDecay=4096 runs in Lava's CPU model but exceeds "
            "Loihi's 12-bit dv"
        ),
    )
    if clocks:
        notes += (
            f"biases arrive from {clocks} clock input channel(s) appended to the input "
            "(IntNetwork.drive adds them)",
        )
    if readout_scale is not None:
        notes += (_readout_note(readout_scale, network),)
    return notes


# --- reset to zero ----------------------------------------------------------------------------
def _zero_scale(weight: np.ndarray, bias: np.ndarray, theta: float, readout: bool) -> float:
    top_bias = float(np.abs(bias).max()) if bias.size else 0.0
    return min(
        weight_scale(weight, theta, math.inf if readout else VTH_MAX + 1),
        BIAS_RANGE[1] / top_bias if top_bias else math.inf,
    )


def _zero_layer(
    layer: FloatLayer,
    k: int,
    current: tuple[int, ...],
    network: FloatNetwork,
    theta: float,
    readout: bool,
) -> tuple[Layer, LayerReport]:
    """Layer ``k`` (1-based; ``k`` bias-only steps reach it before its first input)."""
    w = float_weight(layer)
    b = float_bias(layer, w)
    s = _zero_scale(w, b, theta, readout)
    theta_int = round(theta * s)
    w_int = np.rint(w * s).astype(np.int64)
    b_int = np.rint(b * s).astype(np.int64)
    out_shape = output_shape(layer, current)
    v0 = v0_map(layer, network.spec, out_shape)
    v0_int = np.rint(v0 * s).astype(np.int64)
    bias_map = b_int
    if layer.kind != "dense":
        bias_map = b_int.reshape(-1, 1, 1) * np.ones(out_shape, dtype=np.int64)
    if readout:
        # the integrator sums the bias on every step; the k steps before its first input
        # are cancelled exactly through the initial membrane (it never resets)
        neuron = _integrator(start=(-k * bias_map) << 6)
        meta: dict[str, Any] = {"scale": s, "readout": "membrane"}
    else:
        # k bias-only steps reach the layer before its first input: start that much lower
        worst = v0_int - (k - 1) * np.minimum(bias_map, 0)
        if k > 1 and (worst > theta_int - 1).any():
            raise ExportError(
                f"export.netx: layer {layer.name!r}: with reset='zero' its negative bias during "
                "the "
                f"{k} steps of latency would fire it before any input; use reset='subtract'"
            )
        start = v0_int - k * bias_map
        neuron = Cuba(v_th_mant=theta_int - 1, i_decay=4096, v_decay=0, v_init=start << 6)
        meta = {"scale": s, "theta": theta_int}
    int_layer = Layer(
        kind="dense" if layer.kind == "dense" else "conv",
        shape=out_shape,
        name=layer.name,
        weight=w_int,
        bias=b_int if b_int.any() else None,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        neuron=neuron,
        metadata=meta,
    )
    return int_layer, layer_report(layer.name, s, w, w_int, b, b_int, v0, v0_int)


def _lower_zero(
    network: FloatNetwork, shape: tuple[int, ...], layers: list[FloatLayer], theta: float
) -> Lowered:
    int_layers = [Layer(kind="input", shape=shape, name="input")]
    reports = []
    current = shape
    membrane = network.readout == "membrane"
    last = sum(layer.kind != "flatten" for layer in layers)
    k = 0
    for layer in layers:
        if layer.kind == "flatten":
            current = (int(np.prod(current)),)
            int_layers.append(Layer(kind="flatten", shape=current, name=layer.name))
            continue
        k += 1
        int_layer, report = _zero_layer(layer, k, current, network, theta, membrane and k == last)
        int_layers.append(int_layer)
        reports.append(report)
        current = int_layer.shape
    notes: tuple[str, ...] = (
        (
            "IC-rate with reset='zero': Lava resets v to zero, so the residual above threshold is "
            "lost at every spike; the file computes an approximation of the converted network"
        ),
    )
    if membrane:
        notes += (_readout_note(reports[-1].scale, network),)
    return (
        IntNetwork(layers=tuple(int_layers), metadata=metadata(network, k, "zero")),
        tuple(reports),
        notes,
    )
