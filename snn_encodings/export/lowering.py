r"""From a converted network and its spec to the integer layers of a netx file, per encoding.

A :class:`FloatNetwork` is the export view of a converted spiking network: a chain of synapses
(weights and per-step bias in threshold units, initial membranes) and the spec. :func:`lower`
builds the :class:`~snn_encodings.export.layers.IntNetwork` that computes the same spikes on
Lava's CUBA neurons, or raises :class:`ExportError` saying why it cannot.

**IC-rate** (``reset="subtract"``, the default: faithful). Integrate-and-fire with reset by
subtraction, :math:`m_t = m_{t-1} - \theta s_{t-1} + I_t`, :math:`s_t = [m_t \ge \theta]`. Lava
resets ``v`` to zero, which would drop the residual, so the membrane lives in ``u`` instead:

- ``iDecay = 0`` makes ``u`` a perfect integrator of the synaptic input;
- ``vDecay = 4096`` and bias 0 make ``v = u`` every step, so the threshold reads ``u`` and the
  reset of ``v`` has no effect;
- a ``dense_rec`` self-weight :math:`-\theta` subtracts the threshold one step after each spike,
  which is exactly when the next step's membrane needs it (:math:`u_t = u_{t-1} + a_t - \theta
  s_{t-1}` is the pre-reset membrane :math:`m_t`);
- :math:`m \ge \theta` on integers is ``u > vThMant`` with ``vThMant = θ_int - 1``;
- biases must be integrated too, so they arrive as synaptic input from *clock* neurons: the
  input gets always-on channels (``IntNetwork.clock_inputs``) and every hidden layer relays
  them through extra neurons (input θ, self-weight -θ: they fire every step, one step later per
  layer, so each layer's bias starts exactly when its data does); a bias beyond the 8-bit
  weight range is split over several clocks;
- the initial membrane :math:`v_0` goes to ``neuron/uInit`` (applied after loading).

Limits: ``dense_rec`` exists for dense layers only, so conv layers raise unless
``unroll_conv=True`` writes each conv as the dense layer with its equivalent weight matrix
(:func:`unroll_convolutions`: exact, at the cost of one synapse per input-output pair);
``vDecay = 4096`` runs in Lava's CPU model but exceeds Loihi's 12-bit ``dv`` register (noted in
the report); ``u`` wraps at :math:`\pm 2^{17}` file units (the fixed-point model counts wraps).

**IC-rate** (``reset="zero"``: Lava's native neuron, a *different* function). ``iDecay = 4096,
vDecay = 0``, bias in ``v``, reset to zero, so the residual above threshold is lost at each spike.
Works for conv layers. The bias a layer receives before its first input (one step per layer of
latency) is cancelled through its initial membrane; the report's notes say it is approximate.

**Readout.** ``FloatNetwork.readout == "membrane"`` (IC-rate's compensated output, count plus
residual minus :math:`v_0`, which is exactly the time-averaged input current) makes the last
layer a non-spiking integrator (``iDecay = 4096, vDecay = 0, vThMant = 131071``) whose final
``v`` is the summed current; ``"spikes"`` keeps a spiking last layer read by its count.
:func:`decode_output` turns either into the converted network's output units.

**Radix** raises: its bit-serial output needs reset by subtraction *and* doubling of the
membrane (or a time-varying threshold); Lava's CUBA decays only shrink, it resets to zero with a
fixed threshold, and CUBA cannot send graded spikes from a file. The nearest faithful
construction is the integration side alone (``iDecay = 4096, vDecay = 2048`` with LSB-first
inputs), which does not produce radix spikes.

**Quartz** raises (its record's ``netx_refusal``): its ramp (``iDecay = 0, vDecay = 0``), readout
(a clock channel, delayed to step :math:`2K`, with per-neuron weight :math:`1 - \sum w - b`)
and bias spikes (delayed clock synapses) are expressible, but fire-once after an early spike,
the rectifier and the exact mode's hold until the readout are not (see the message).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from snn_encodings.encoding import encoding_for, encoding_named
from snn_encodings.errors import ExportError
from snn_encodings.export.layers import IntNetwork
from snn_encodings.specs.base import Spec

__all__ = [
    "FloatLayer",
    "FloatNetwork",
    "LayerReport",
    "decode_output",
    "lower",
    "run_float",
    "unroll_convolutions",
]

WEIGHT_MAX = 254
"""Largest weight magnitude used (netx's mixed-sign range is [-256, 254])."""


@dataclass(frozen=True, kw_only=True, eq=False)
class FloatLayer:
    """One synapse (or flatten) of a converted network, in threshold units of its own layer.

    Args:
        kind: ``"dense"``, ``"conv"``, ``"flatten"``; ``"avg_pool"`` and ``"max_pool"`` are
            accepted only to be refused with the reason.
        name: the source layer's name, for messages.
        weight: dense ``(out, in)``, conv ``(out, in/groups, kh, kw)``: current per input spike.
        bias: per-step current ``(out,)`` (dense) or ``(C,)`` (conv); ``None`` for none.
        v0: initial membrane, scalar or per neuron (``(out,)`` or ``(C, H, W)``); ``None`` for
            the spec's default.
        stride, padding, dilation, groups: conv geometry, ``(y, x)``.
    """

    kind: Literal["dense", "conv", "flatten", "avg_pool", "max_pool"]
    name: str = ""
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    v0: float | np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass(frozen=True, kw_only=True, eq=False)
class FloatNetwork:
    """A converted network as export sees it: ``spec``, input shape (CHW or flat), layers.

    Args:
        spec: the encoding.
        input_shape: one step of input, CHW or flat.
        layers: the chain.
        readout: how the output layer is read: ``"spikes"`` (spike count times threshold over
            the window) or ``"membrane"`` (IC-rate's compensated readout, count plus residual
            membrane: the time-averaged input current, so the file's last layer is a
            non-spiking integrator read as membrane).
        output_scale: multiplies the decoded outputs back to the ANN's logit units (scalar or
            one per output).
        output_offset: then subtracted from them (logit units; nonzero for an output layer
            that cannot go below zero, see :mod:`snn_encodings.conversion.output`).
    """

    spec: Spec
    input_shape: tuple[int, ...]
    layers: tuple[FloatLayer, ...]
    readout: Literal["spikes", "membrane"] = "spikes"
    output_scale: float | np.ndarray = 1.0
    output_offset: float = 0.0


@dataclass(frozen=True, kw_only=True)
class LayerReport:
    """Quantisation of one layer.

    Attributes:
        name: the source layer's name.
        scale: integer units per threshold unit (weights, bias, threshold share it).
        weight_error: largest absolute rounding error of a weight, in threshold units.
        bias_error: largest absolute rounding error of the per-step bias, in threshold units.
        v0_error: largest absolute rounding error of the initial membrane, in threshold units.
        weight_range: ``(min, max)`` of the integer weights written.
    """

    name: str
    scale: float
    weight_error: float
    bias_error: float
    v0_error: float
    weight_range: tuple[int, int]


def lower(
    network: FloatNetwork,
    *,
    reset: Literal["subtract", "zero"] = "subtract",
    unroll_conv: bool = False,
) -> tuple[IntNetwork, tuple, tuple[str, ...]]:
    """Build the integer netx layers of ``network``.

    Args:
        network: the converted network.
        reset: IC-rate only: ``"subtract"`` (faithful) or ``"zero"`` (Lava's native reset;
            computes a different function, see the module docstring).
        unroll_conv: with ``reset="subtract"``, write every convolution as the dense layer with
            its equivalent weight matrix (:func:`unroll_convolutions`), so that it can carry the
            ``dense_rec`` self-connection. Faithful; costs one synapse per (input, output)
            pair instead of one per kernel weight (the report's notes give the numbers).
    Returns:
        ``(int_network, layer_reports, notes)``.
    Raises:
        ExportError: naming the layer, why netx cannot express it, and what to do.
    """
    record = encoding_for(network.spec)
    if record.netx is None:
        raise ExportError(
            record.netx_refusal
            or f"export.netx: no netx export for the {type(network.spec).__name__} encoding"
        )
    if reset not in ("subtract", "zero"):
        raise ExportError(f"export.netx: reset must be 'subtract' or 'zero', got {reset!r}")
    if network.readout not in ("spikes", "membrane"):
        raise ExportError(
            f"export.netx: readout must be 'spikes' or 'membrane', got {network.readout!r}"
        )
    notes: tuple[str, ...] = ()
    if unroll_conv:
        before = synapse_count(network)
        network = unroll_convolutions(network)
        after = synapse_count(network)
        if after != before:
            notes = (
                (
                    f"convolutions unrolled to dense layers: {after:,} synapses instead of "
                    f"{before:,} conv weights ({after / max(before, 1):.0f}x the synaptic memory, "
                    "and a dense_rec self-connection matrix per layer)"
                ),
            )
    int_network, reports, lowered = record.load("netx")(network, reset)
    return int_network, reports, notes + lowered


def synapse_count(network: FloatNetwork) -> int:
    return sum(
        int(np.asarray(layer.weight).size) for layer in network.layers if layer.weight is not None
    )


def unroll_convolutions(network: FloatNetwork) -> FloatNetwork:
    """The same network with every conv written as a dense layer (CHW-flattened neurons).

    Column ``i`` of the dense weight is the conv's response to a unit input at flat position
    ``i`` (exact: each entry is one kernel weight or zero); per-channel biases and initial
    membranes are repeated over the positions. Flatten layers become no-ops and are dropped.

    Args:
        network: a network with conv layers.
    Returns:
        A network of dense layers only, with a flat input shape.
    """
    shape = tuple(network.input_shape)
    layers: list[FloatLayer] = []
    for layer in network.layers:
        if layer.kind == "flatten":
            shape = (int(np.prod(shape)),)
            continue
        if layer.kind != "conv":
            layers.append(layer)
            shape = (np.asarray(layer.weight).shape[0],)
            continue
        dense, shape = _unrolled(layer, shape)
        layers.append(dense)
    return FloatNetwork(
        spec=network.spec,
        input_shape=(int(np.prod(network.input_shape)),),
        layers=tuple(layers),
        readout=network.readout,
        output_scale=network.output_scale,
        output_offset=network.output_offset,
    )


def _unrolled(layer: FloatLayer, shape: tuple[int, ...]) -> tuple[FloatLayer, tuple[int, ...]]:
    """The dense equivalent of conv ``layer`` on input ``shape`` (CHW), and its output shape."""
    import torch

    size = int(np.prod(shape))
    eye = torch.eye(size, dtype=torch.float64).view(size, *shape)
    kernel = torch.as_tensor(np.asarray(layer.weight), dtype=torch.float64)
    with torch.no_grad():
        response = torch.nn.functional.conv2d(
            eye,
            kernel,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
        )
    out_shape = tuple(response.shape[1:])
    positions = int(np.prod(out_shape[1:]))
    bias = (
        None
        if layer.bias is None
        else np.repeat(np.asarray(layer.bias, dtype=np.float64), positions)
    )
    v0 = layer.v0
    if v0 is not None and np.ndim(v0) > 0:
        v0 = np.broadcast_to(np.asarray(v0, dtype=np.float64), out_shape).reshape(-1).copy()
    dense = FloatLayer(
        kind="dense",
        name=layer.name,
        weight=response.reshape(size, -1).T.numpy().copy(),
        bias=bias,
        v0=v0,
    )
    return dense, out_shape


def chain(network: FloatNetwork) -> tuple[tuple[int, ...], list[FloatLayer]]:
    """Refuse what netx cannot load; fold a leading flatten into the input."""
    shape = tuple(network.input_shape)
    layers = list(network.layers)
    for index, layer in enumerate(layers):
        where = f"export.netx: layer {index} {layer.name!r} ({layer.kind})"
        if layer.kind == "max_pool":
            raise ExportError(
                f"{where}: max-pooling is not loadable by netx; replace it with average pooling "
                "and fold that into the next conv"
            )
        if layer.kind == "avg_pool":
            raise ExportError(
                f"{where}: netx cannot load pooling layers; fold average pooling into the next "
                "conv (a strided conv with the pooled kernel)"
            )
        if layer.kind not in ("dense", "conv", "flatten"):
            raise ExportError(f"{where}: netx has no such layer")
    if layers and layers[0].kind == "flatten":
        shape = (int(np.prod(shape)),)
        layers = layers[1:]
    if not layers or layers[-1].kind == "flatten":
        raise ExportError("export.netx: the network must end with a dense or conv layer")
    return shape, layers


def weight_scale(weight: np.ndarray, theta: float, limit: float) -> float:
    top = float(np.abs(weight).max()) if weight.size else 0.0
    return min(WEIGHT_MAX / top if top > 0 else math.inf, limit / theta)


def even(x: np.ndarray) -> np.ndarray:
    return (2 * np.rint(np.asarray(x) / 2)).astype(np.int64)


def layer_report(
    name: str,
    scale: float,
    weight: np.ndarray,
    w_int: np.ndarray,
    bias: np.ndarray,
    b_int: np.ndarray,
    v0: np.ndarray,
    v_int: np.ndarray,
) -> LayerReport:
    """The quantisation of one layer at ``scale`` (integer values over float ones)."""

    def err(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(b / scale - a).max()) if a.size else 0.0

    return LayerReport(
        name=name,
        scale=scale,
        weight_error=err(weight, w_int),
        bias_error=err(bias, b_int),
        v0_error=err(v0, v_int),
        weight_range=(int(w_int.min()), int(w_int.max())),
    )


def v0_map(layer: FloatLayer, spec: Spec, out_shape: tuple[int, ...]) -> np.ndarray:
    """The layer's initial membranes broadcast to ``out_shape`` (the spec's default if unset)."""
    value = spec.default_v0 if layer.v0 is None else layer.v0  # type: ignore[attr-defined]
    return np.broadcast_to(np.asarray(value, dtype=np.float64), out_shape)


def float_weight(layer: FloatLayer) -> np.ndarray:
    """The layer's weight as float64."""
    return np.asarray(layer.weight, dtype=np.float64)


def float_bias(layer: FloatLayer, weight: np.ndarray) -> np.ndarray:
    """The layer's per-step bias as float64 ``(out,)``, zeros when it has none."""
    if layer.bias is None:
        return np.zeros(weight.shape[0])
    return np.asarray(layer.bias, dtype=np.float64)


def output_shape(layer: FloatLayer, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of a dense ``(out,)`` or conv ``(C, H, W)`` layer's output for input ``in_shape``."""
    weight = np.asarray(layer.weight)
    if layer.kind == "dense":
        return (weight.shape[0],)
    sizes = [
        (in_shape[1 + a] + 2 * layer.padding[a] - layer.dilation[a] * (weight.shape[2 + a] - 1) - 1)
        // layer.stride[a]
        + 1
        for a in (0, 1)
    ]
    return (weight.shape[0], *sizes)


def metadata(network: FloatNetwork, latency: int, reset: str) -> dict[str, str | int | float]:
    spec = network.spec
    return {
        "encoding": spec.name,
        "spec": repr(spec),
        "steps": int(spec.steps_per_layer),
        "latency": latency,
        "reset": reset,
        "readout": network.readout,
        "threshold": float(spec.threshold),  # type: ignore[attr-defined]
        "output_scale": json.dumps(np.asarray(network.output_scale, dtype=np.float64).tolist()),
        "output_offset": float(network.output_offset),
        "output_window": f"steps {latency}..{latency + spec.steps_per_layer - 1}",
    }


def decode_output(network: IntNetwork, spikes: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Decode a run of an exported IC-rate file to the converted network's output units.

    Args:
        network: the exported network (as read back from the file).
        spikes: the last layer's spikes over the run, ``(steps, *out)``, from
            :func:`~snn_encodings.export.fixed_point.run_fixed_point` or Lava, for a run of
            ``T + latency`` steps (what :meth:`IntNetwork.drive` builds).
        v: the last layer's final ``v`` in x64 units.
    Returns:
        ``(K,)`` float64 values: with ``readout="membrane"`` the integrated current
        :math:`v / (64\\,s\\,T)`, else the window's spike count times :math:`\\theta / T`; both
        times ``output_scale``, less ``output_offset`` (the ANN's logit units, as the converted
        network returns them).
    Raises:
        ExportError: if the file is not an IC-rate export, or the integrator saturated or fired.
    """
    meta = network.metadata
    if not _has_lowering(str(meta.get("encoding"))):
        raise ExportError(
            f"decode_output: the file holds a {meta.get('encoding')!r} network, not a netx "
            "export of a converted network"
        )
    steps, latency = int(meta["steps"]), int(meta["latency"])
    last = network.layers[-1]
    out = (
        last.shape[0]
        if last.kind == "conv"
        else last.shape[0] - int(last.metadata.get("relays", 0))
    )
    scale = float(last.metadata["scale"])
    factor = np.asarray(json.loads(str(meta["output_scale"])), dtype=np.float64)
    spikes = np.asarray(spikes)
    if meta["readout"] == "membrane":
        if spikes.any() or np.abs(v).max() >= (2**23 - 1):
            raise ExportError(
                "decode_output: the output integrator saturated (|v| reached 2**23 - 1 in x64 "
                "units) or fired; the file cannot represent this output, rescale the last layer"
            )
        values = np.asarray(v, dtype=np.float64)[:out] / (64 * scale * steps)
    else:
        window = spikes[latency : latency + steps, :out]
        values = window.sum(0).astype(np.float64) * float(meta["threshold"]) / steps
    return values * factor - float(meta.get("output_offset", 0.0))


def _has_lowering(name: str) -> bool:
    try:
        return encoding_named(name).netx is not None
    except LookupError:
        return False


def run_float(network: FloatNetwork, spikes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``network`` in float64 with the core neuron (the reference the file is compared with).

    Args:
        network: the converted network.
        spikes: ``(T, *input_shape)`` input spikes.
    Returns:
        ``(output_spikes, final_membrane)``, ``(T, *out)`` and ``(*out,)``, with synchronous
        layers (no latency), as the converted network computes them.
    """
    import torch

    from snn_encodings.functional import simulate

    x = torch.as_tensor(np.asarray(spikes), dtype=torch.float64)
    steps = x.shape[0]
    state = None
    for layer in network.layers:
        if layer.kind == "flatten":
            x = x.reshape(steps, -1)
            continue
        w = torch.as_tensor(np.asarray(layer.weight), dtype=torch.float64)
        if layer.kind == "dense":
            cur = x @ w.T
        else:
            cur = torch.nn.functional.conv2d(
                x,
                w,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )
        if layer.bias is not None:
            b = torch.as_tensor(np.asarray(layer.bias), dtype=torch.float64)
            cur = cur + (b if layer.kind == "dense" else b.view(-1, 1, 1))
        v0 = v0_map(layer, network.spec, tuple(cur.shape[1:]))
        out = simulate(network.spec, cur.unsqueeze(1), v0=torch.tensor(v0).unsqueeze(0))
        x = out.spikes[:, 0]
        state = out.state
    if state is None:
        raise ExportError("run_float: the network has no synaptic layer")
    return x.numpy(), state.v[0].numpy()
