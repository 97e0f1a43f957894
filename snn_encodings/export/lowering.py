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

Limits: ``dense_rec`` exists for dense layers only, so conv layers raise (use ``reset="zero"``);
``vDecay = 4096`` runs in Lava's CPU model but exceeds Loihi's 12-bit ``dv`` register (noted in
the report); ``u`` wraps at :math:`\pm 2^{17}` file units (the fixed-point model counts wraps).

**IC-rate** (``reset="zero"``: Lava's native neuron, a *different* function). ``iDecay = 4096,
vDecay = 0``, bias in ``v``, reset to zero, so the residual above threshold is lost at each spike.
Works for conv layers. The bias a layer receives before its first input (one step per layer of
latency) is cancelled through its initial membrane; the report's notes say it is approximate.

**Radix** raises: its bit-serial output needs reset by subtraction *and* doubling of the
membrane (or a time-varying threshold); Lava's CUBA decays only shrink, it resets to zero with a
fixed threshold, and CUBA cannot send graded spikes from a file. The nearest faithful
construction is the integration side alone (``iDecay = 4096, vDecay = 2048`` with LSB-first
inputs), which does not produce radix spikes.

**Quartz** raises in this version: its ramp (``iDecay = 0, vDecay = 0``) and fire-once
(``dense_rec`` self-weight -254) are expressible, but its readout and rectifier synapses are not
exported yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from snn_encodings.errors import ExportError
from snn_encodings.export.layers import BIAS_RANGE, VTH_MAX, Cuba, IntNetwork, Layer
from snn_encodings.specs.base import Spec

__all__ = ["FloatLayer", "FloatNetwork", "lower", "run_float"]

_W = 254
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
    """A converted network as export sees it: ``spec``, input shape (CHW or flat), layers."""

    spec: Spec
    input_shape: tuple[int, ...]
    layers: tuple[FloatLayer, ...]


def lower(network: FloatNetwork, *, reset: Literal["subtract", "zero"] = "subtract") -> tuple[IntNetwork, tuple, tuple[str, ...]]:
    """Build the integer netx layers of ``network``.

    Args:
        network: the converted network.
        reset: IC-rate only: ``"subtract"`` (faithful, dense layers) or ``"zero"`` (Lava's
            native reset; computes a different function, see the module docstring).
    Returns:
        ``(int_network, layer_reports, notes)``.
    Raises:
        ExportError: naming the layer, why netx cannot express it, and what to do.
    """
    from snn_encodings.export.netx import LayerReport  # noqa: F401 (circular at import time)

    name = network.spec.name
    if name == "radix":
        raise ExportError(
            "export.netx: radix cannot be exported to netx: its bit-serial output needs reset by "
            "subtraction plus doubling of the membrane (or a time-varying threshold), while Lava's "
            "CUBA neuron only decays, resets to zero at a fixed threshold and cannot send graded "
            "spikes from a file. The nearest faithful construction, iDecay=4096 vDecay=2048 with "
            "LSB-first inputs, integrates radix inputs but does not emit radix spikes; export the "
            "network with the IC-rate encoding instead"
        )
    if name == "quartz":
        raise ExportError(
            "export.netx: Quartz export is not available yet: its ramp (iDecay=0, vDecay=0) and "
            "fire-once (dense_rec self-weight -254) are expressible, but its readout and "
            "rectifier synapses are not exported; export with the IC-rate encoding instead"
        )
    if name != "icrate":
        raise ExportError(f"export.netx: no netx export for the {type(network.spec).__name__} encoding")
    if reset not in ("subtract", "zero"):
        raise ExportError(f"export.netx: reset must be 'subtract' or 'zero', got {reset!r}")
    return _lower_icrate(network, reset)


def _synapses(network: FloatNetwork) -> tuple[tuple[int, ...], list[FloatLayer]]:
    """Refuse what netx cannot load; fold a leading flatten into the input."""
    shape = tuple(network.input_shape)
    layers = list(network.layers)
    for index, layer in enumerate(layers):
        where = f"export.netx: layer {index} {layer.name!r} ({layer.kind})"
        if layer.kind == "max_pool":
            raise ExportError(f"{where}: max-pooling is not loadable by netx; replace it with average pooling and fold that into the next conv")
        if layer.kind == "avg_pool":
            raise ExportError(f"{where}: netx cannot load pooling layers; fold average pooling into the next conv (a strided conv with the pooled kernel)")
        if layer.kind not in ("dense", "conv", "flatten"):
            raise ExportError(f"{where}: netx has no such layer")
    if layers and layers[0].kind == "flatten":
        shape = (int(np.prod(shape)),)
        layers = layers[1:]
    if not layers or layers[-1].kind == "flatten":
        raise ExportError("export.netx: the network must end with a dense or conv layer")
    return shape, layers


def _scale(weight: np.ndarray, theta: float, limit: float) -> float:
    top = float(np.abs(weight).max()) if weight.size else 0.0
    return min(_W / top if top > 0 else math.inf, limit / theta)


def _even(x: np.ndarray) -> np.ndarray:
    return (2 * np.rint(np.asarray(x) / 2)).astype(np.int64)


def _report(name: str, scale: float, weight: np.ndarray, w_int: np.ndarray, bias: np.ndarray, b_int: np.ndarray, v0: np.ndarray, v_int: np.ndarray):
    from snn_encodings.export.netx import LayerReport

    def err(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(b / scale - a).max()) if a.size else 0.0

    return LayerReport(
        name=name, scale=scale, weight_error=err(weight, w_int), bias_error=err(bias, b_int),
        v0_error=err(v0, v_int), weight_range=(int(w_int.min()), int(w_int.max())),
    )


def _lower_icrate(network: FloatNetwork, reset: str) -> tuple[IntNetwork, tuple, tuple[str, ...]]:
    spec = network.spec
    if spec.input_coding != "sigma_delta":  # type: ignore[attr-defined]
        raise ExportError(
            "export.netx: ICRate(input_coding='analog') feeds the first layer real values, but "
            "Loihi inputs are spikes; convert with ICRate(input_coding='sigma_delta')"
        )
    theta = float(spec.threshold)  # type: ignore[attr-defined]
    shape, layers = _synapses(network)
    if reset == "subtract":
        return _icrate_subtract(network, shape, layers, theta)
    return _icrate_zero(network, shape, layers, theta)


def _v0(layer: FloatLayer, spec: Spec, out_shape: tuple[int, ...]) -> np.ndarray:
    value = spec.default_v0 if layer.v0 is None else layer.v0  # type: ignore[attr-defined]
    return np.broadcast_to(np.asarray(value, dtype=np.float64), out_shape)


def _icrate_subtract(network: FloatNetwork, shape: tuple[int, ...], layers: list[FloatLayer], theta: float):
    for index, layer in enumerate(layers):
        if layer.kind != "dense":
            raise ExportError(
                f"export.netx: layer {layer.name!r} ({layer.kind}): IC-rate's reset by subtraction "
                "needs a recurrent self-connection (dense_rec), which netx has for dense layers only; "
                "export with reset='zero' (Lava's native reset to zero, an approximation whose "
                "accuracy the caller should measure) or use dense layers"
            )
    if len(shape) != 1:
        raise ExportError("export.netx: IC-rate with reset='subtract' needs a flat input; start the network with a flatten")
    weights = [np.asarray(layer.weight, dtype=np.float64) for layer in layers]
    # even integers: Lava truncates the recurrent (all-negative) synapse with the bit budget of
    # the mixed-sign feed-forward one, which is exact only for even weights (also Loihi's grid)
    scales = [_scale(w, theta, _W) for w in weights]
    biases = [np.zeros(w.shape[0]) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64) for w, layer in zip(weights, layers)]
    b_ints = [_even(b * s) for b, s in zip(biases, scales)]
    clocks = max((math.ceil(np.abs(b).max() / _W) for b in b_ints if b.any()), default=0)
    int_layers = [Layer(kind="input", shape=(shape[0] + clocks,), name="input")]
    reports = []
    last = len(layers) - 1
    for k, (layer, w, s, b, b_int) in enumerate(zip(layers, weights, scales, biases, b_ints)):
        out, n_in = w.shape
        if n_in != int_layers[-1].shape[0] - clocks:
            raise ExportError(f"export.netx: layer {layer.name!r}: weight has {n_in} inputs, the previous layer {int_layers[-1].shape[0] - clocks} outputs")
        theta_int = int(_even(np.asarray(theta * s)))
        if theta_int < 2:
            raise ExportError(f"export.netx: layer {layer.name!r}: threshold rounds to 0 at scale {s:.3g}; rescale the layer")
        w_int = _even(w * s)
        chunks = np.zeros((out, clocks), dtype=np.int64)
        rest = b_int.copy()
        for m in range(clocks):
            chunks[:, m] = np.clip(rest, -_W, _W)
            rest = rest - chunks[:, m]
        relays = clocks if k < last else 0
        weight = np.zeros((out + relays, n_in + clocks), dtype=np.int64)
        weight[:out, :n_in] = w_int
        weight[:out, n_in:] = chunks
        weight[out:, n_in:] = np.eye(relays, clocks, dtype=np.int64) * theta_int
        v0 = _v0(layer, network.spec, (out,))
        v0_int = np.rint(v0 * s).astype(np.int64)
        u_init = np.concatenate([v0_int, np.zeros(relays, dtype=np.int64)]) << 6
        int_layers.append(Layer(
            kind="dense_rec", shape=(out + relays,), name=layer.name, weight=weight,
            weight_rec=-theta_int * np.eye(out + relays, dtype=np.int64),
            neuron=Cuba(v_th_mant=theta_int - 1, i_decay=0, v_decay=4096, u_init=u_init),
            metadata={"scale": s, "relays": relays, "theta": theta_int},
        ))
        reports.append(_report(layer.name, s, w, w_int, b, b_int, v0, v0_int))
    notes: tuple[str, ...] = (
        (
            "IC-rate reset by subtraction: membrane held in u (iDecay=0, vDecay=4096) with a "
            "dense_rec self-weight -theta; vDecay=4096 runs in Lava's CPU model but exceeds "
            "Loihi's 12-bit dv"
        ),
    )
    if clocks:
        notes += (f"biases arrive from {clocks} clock input channel(s) appended to the input (IntNetwork.drive adds them)",)
    meta = _meta(network, len(layers), "subtract")
    return IntNetwork(layers=tuple(int_layers), metadata=meta, clock_inputs=clocks), tuple(reports), notes


def _icrate_zero(network: FloatNetwork, shape: tuple[int, ...], layers: list[FloatLayer], theta: float):
    int_layers = [Layer(kind="input", shape=shape, name="input")]
    reports = []
    current = shape
    k = 0
    for layer in layers:
        if layer.kind == "flatten":
            current = (int(np.prod(current)),)
            int_layers.append(Layer(kind="flatten", shape=current, name=layer.name))
            continue
        k += 1
        w = np.asarray(layer.weight, dtype=np.float64)
        b = np.zeros(w.shape[0]) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64)
        top_b = float(np.abs(b).max()) if b.size else 0.0
        s = min(_scale(w, theta, VTH_MAX + 1), BIAS_RANGE[1] / top_b if top_b else math.inf)
        theta_int = round(theta * s)
        w_int = np.rint(w * s).astype(np.int64)
        b_int = np.rint(b * s).astype(np.int64)
        if layer.kind == "dense":
            out_shape: tuple[int, ...] = (w.shape[0],)
        else:
            sizes = [(current[1 + a] + 2 * layer.padding[a] - layer.dilation[a] * (w.shape[2 + a] - 1) - 1) // layer.stride[a] + 1 for a in (0, 1)]
            out_shape = (w.shape[0], *sizes)
        v0 = _v0(layer, network.spec, out_shape)
        v0_int = np.rint(v0 * s).astype(np.int64)
        bias_map = b_int if layer.kind == "dense" else b_int.reshape(-1, 1, 1) * np.ones(out_shape, dtype=np.int64)
        # k bias-only steps reach the layer before its first input: start that much lower
        start = v0_int - k * bias_map
        worst = v0_int - (k - 1) * np.minimum(bias_map, 0)
        if k > 1 and (worst > theta_int - 1).any():
            raise ExportError(
                f"export.netx: layer {layer.name!r}: with reset='zero' its negative bias during the "
                f"{k} steps of latency would fire it before any input; use reset='subtract'"
            )
        int_layers.append(Layer(
            kind="dense" if layer.kind == "dense" else "conv", shape=out_shape, name=layer.name,
            weight=w_int, bias=b_int if b_int.any() else None, stride=layer.stride,
            padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
            neuron=Cuba(v_th_mant=theta_int - 1, i_decay=4096, v_decay=0, v_init=start << 6),
            metadata={"scale": s, "theta": theta_int},
        ))
        reports.append(_report(layer.name, s, w, w_int, b, b_int, v0, v0_int))
        current = out_shape
    notes = (
        (
            "IC-rate with reset='zero': Lava resets v to zero, so the residual above threshold is "
            "lost at every spike; the file computes an approximation of the converted network"
        ),
    )
    return IntNetwork(layers=tuple(int_layers), metadata=_meta(network, k, "zero")), tuple(reports), notes


def _meta(network: FloatNetwork, latency: int, reset: str) -> dict[str, str | int | float]:
    spec = network.spec
    return {
        "encoding": spec.name,
        "spec": repr(spec),
        "steps": int(spec.steps_per_layer),
        "latency": latency,
        "reset": reset,
        "output_window": f"steps {latency}..{latency + spec.steps_per_layer - 1}",
    }


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
            cur = torch.nn.functional.conv2d(x, w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        if layer.bias is not None:
            b = torch.as_tensor(np.asarray(layer.bias), dtype=torch.float64)
            cur = cur + (b if layer.kind == "dense" else b.view(-1, 1, 1))
        v0 = _v0(layer, network.spec, tuple(cur.shape[1:]))
        out = simulate(network.spec, cur.unsqueeze(1), v0=torch.tensor(v0).unsqueeze(0))
        x = out.spikes[:, 0]
        state = out.state
    if state is None:
        raise ExportError("run_float: the network has no synaptic layer")
    return x.numpy(), state.v[0].numpy()
