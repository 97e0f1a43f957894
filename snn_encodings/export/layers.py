r"""Integer layer lists: the encoding-agnostic form every netx file is written from and read to.

A :class:`IntNetwork` is a sequential chain of :class:`Layer` records in netx's own units: integer
weights and biases in *file units*, CUBA neuron parameters (threshold mantissa, decays in 1/4096)
and initial states in Lava's x64 *state units*. :func:`snn_encodings.export.netx.write_netx`
writes one, :func:`snn_encodings.export.netx_read.read_netx` reads one back, and
:func:`snn_encodings.export.fixed_point.run_fixed_point` runs one with Lava's fixed-point CUBA
semantics. numpy only, so it also runs inside the separate Lava environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from snn_encodings.errors import ExportError

__all__ = [
    "BIAS_RANGE",
    "DECAY_UNITY",
    "MAX_DELAY",
    "VTH_MAX",
    "Cuba",
    "IntNetwork",
    "Layer",
    "LayerKind",
    "check_network",
    "weight_range",
]

LayerKind = Literal["input", "dense", "dense_rec", "conv", "flatten"]

DECAY_UNITY = 4096
"""Decays are in 1/4096: 0 keeps everything, 4096 forgets everything each step."""
VTH_MAX = 131071
"""Largest threshold mantissa (17 bits unsigned)."""
BIAS_RANGE = (-4096, 4095)
"""Bias mantissa range (13 bits signed); netx applies it with exponent 6."""
MAX_DELAY = 62
"""Largest synaptic delay netx applies (larger values are clipped with a warning)."""


def weight_range(weight: np.ndarray) -> tuple[int, int]:
    """The integer range netx loads ``weight`` without clipping, given its signs.

    Mixed signs: [-256, 254]; all >= 0: [0, 255]; all < 0: [-256, -1] (netx's
    ``optimize_weight_bits``).
    """
    if weight.size and weight.min() < 0 <= weight.max() and weight.max() > 0:
        return (-256, 254)
    if weight.size and weight.max() < 0:
        return (-256, -1)
    return (0, 255)


@dataclass(frozen=True, kw_only=True, eq=False)
class Cuba:
    r"""A layer's CUBA neuron parameters, as Lava's fixed-point LIF (``PyLifModelBitAcc``) runs them.

    .. math::
        u_t = \mathrm{trunc_0}\!\big(u_{t-1}\,(4096 - \delta_u)/4096\big) + 64\,a_t, \quad
        v_t = \mathrm{trunc_0}\!\big(v_{t-1}\,(4096 - \delta_v)/4096\big) + u_t + 64\,b, \quad
        s_t = [v_t > 64\,\vartheta], \quad v_t \leftarrow 0 \text{ where } s_t

    :math:`a` synaptic input and :math:`b` bias (file units), :math:`u, v` states (x64 units),
    :math:`\delta_u` = ``i_decay``, :math:`\delta_v` = ``v_decay`` (1/4096), :math:`\vartheta` =
    ``v_th_mant``. ``u`` wraps modulo :math:`2^{24}`, ``v`` saturates at :math:`\pm(2^{23}-1)`.

    Args:
        v_th_mant: threshold mantissa, 0..131071.
        i_decay: current decay, 0..4096.
        v_decay: voltage decay, 0..4096.
        u_init: initial ``u`` in x64 units (scalar or layer-shaped, CHW); not part of the netx
            schema: stored under our own key and applied after loading.
        v_init: initial ``v`` in x64 units, likewise.
    """

    v_th_mant: int
    i_decay: int
    v_decay: int
    u_init: np.ndarray | None = None
    v_init: np.ndarray | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class Layer:
    """One netx layer. Shapes are CHW (netx's file order); dense shapes are ``(out,)``.

    Args:
        kind: ``"input"``, ``"dense"``, ``"dense_rec"``, ``"conv"`` or ``"flatten"``.
        shape: the layer's output shape.
        name: the source layer's name, used in error messages.
        weight: integer weights: dense ``(out, in)``, conv ``(out, in/groups, kh, kw)``.
        weight_rec: ``dense_rec`` only: recurrent weights ``(out, out)``, one step of latency.
        bias: integer bias per neuron ``(out,)`` (dense) or per channel ``(C,)`` (conv).
        delay: dense only: integer delays per synapse ``(out, in)``, 0..62.
        stride, padding, dilation: conv only, ``(y, x)``.
        groups: conv only.
        neuron: CUBA parameters; ``None`` for input and flatten layers.
        metadata: extra scalar keys written under ``layer/<i>/snn_encodings``.
    """

    kind: LayerKind
    shape: tuple[int, ...]
    name: str = ""
    weight: np.ndarray | None = None
    weight_rec: np.ndarray | None = None
    bias: np.ndarray | None = None
    delay: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    neuron: Cuba | None = None
    metadata: dict[str, str | int | float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind} layer {self.name!r}" if self.name else f"{self.kind} layer"


@dataclass(frozen=True, kw_only=True, eq=False)
class IntNetwork:
    """A sequential netx network: ``layers[0]`` is the input, the rest follow in order.

    Args:
        layers: the chain.
        metadata: network-level scalars written under ``/snn_encodings`` (encoding, steps,
            latency, clock inputs, ...); netx ignores them.
        clock_inputs: number of always-on input channels appended after the data channels
            (1-D inputs only): the encodings use them to bring biases in as synaptic input.
    """

    layers: tuple[Layer, ...]
    metadata: dict[str, str | int | float] = field(default_factory=dict)
    clock_inputs: int = 0

    @property
    def synapse_layers(self) -> int:
        """Number of synaptic layers: the network's latency in steps (one per synapse)."""
        return sum(layer.kind in ("dense", "dense_rec", "conv") for layer in self.layers)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one step of user input (the input layer without its clock channels)."""
        shape = self.layers[0].shape
        return (shape[0] - self.clock_inputs, *shape[1:])

    def drive(self, spikes: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Full input of the file from user spikes ``(T, *data_shape)``.

        Appends the clock channels (1 for each of the ``T`` data steps) and pads with zero steps up
        to ``steps`` (default ``T + synapse_layers``, enough to flush the chain).

        Raises:
            ExportError: if ``spikes`` has the wrong shape or values other than 0 and 1.
        """
        spikes = np.asarray(spikes)
        if spikes.ndim < 1 or tuple(spikes.shape[1:]) != self.data_shape:
            raise ExportError(
                f"export input: spikes must be shaped (T, {', '.join(map(str, self.data_shape))}), "
                f"got {tuple(spikes.shape)}"
            )
        if not np.isin(spikes, (0, 1)).all():
            raise ExportError("export input: spikes must be 0 or 1; Loihi inputs are binary events")
        length = spikes.shape[0]
        total = length + self.synapse_layers if steps is None else steps
        if total < length:
            raise ExportError(f"export input: steps={total} is shorter than the input ({length})")
        full = np.zeros((total, *self.layers[0].shape), dtype=np.int8)
        full[:length, : self.data_shape[0]] = spikes
        full[:length, self.data_shape[0] :] = 1
        return full


def check_network(network: IntNetwork) -> None:
    """Raise :class:`ExportError` unless netx loads ``network`` and computes what it says.

    Checks layer order and shapes, integer dtypes, weight, bias, threshold, decay and delay
    ranges, and the all-zero weight matrix netx's loader cannot handle. Never clips or wraps.
    """
    layers = network.layers
    if not layers or layers[0].kind != "input":
        raise ExportError("export.netx: the first layer must be the input layer")
    if len(layers) < 2:
        raise ExportError("export.netx: the network has no synaptic layer")
    if layers[-1].kind in ("input", "flatten"):
        raise ExportError(
            f"export.netx: the last layer is a {layers[-1].kind} layer; end with a synapse"
        )
    if network.clock_inputs and len(layers[0].shape) != 1:
        raise ExportError("export.netx: clock input channels need a 1-D input layer")
    previous = layers[0].shape
    for index, layer in enumerate(layers[1:], start=1):
        where = f"export.netx: layer {index} ({layer.label})"
        if layer.kind == "input":
            raise ExportError(f"{where}: only layer 0 can be an input layer")
        if layer.kind == "flatten":
            expected = (int(np.prod(previous)),)
            if tuple(layer.shape) != expected:
                raise ExportError(f"{where}: shape must be {expected}, got {layer.shape}")
            previous = layer.shape
            continue
        _check_synapse(layer, previous, where)
        previous = layer.shape


def _check_int_array(value: object, what: str, where: str) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer):
        raise ExportError(f"{where}: {what} must be integers, got dtype {array.dtype}; round first")
    return array.astype(np.int64)


def _check_synapse(layer: Layer, previous: tuple[int, ...], where: str) -> None:
    if layer.weight is None:
        raise ExportError(f"{where}: has no weight")
    weight = _check_int_array(layer.weight, "weights", where)
    _check_shapes(layer, weight, previous, where)
    _check_weights(layer, weight, where)
    if layer.bias is not None:
        _check_bias(layer, where)
    if layer.delay is not None:
        _check_delay(layer, weight, where)
    _check_neuron(layer, where)


def _check_shapes(layer: Layer, weight: np.ndarray, previous: tuple[int, ...], where: str) -> None:
    if layer.kind in ("dense", "dense_rec"):
        if len(layer.shape) != 1:
            raise ExportError(f"{where}: a dense layer's shape must be (out,), got {layer.shape}")
        if len(previous) != 1:
            raise ExportError(
                f"{where}: its input has shape {previous}; put a flatten layer before a dense layer"
            )
        if weight.shape != (layer.shape[0], previous[0]):
            raise ExportError(
                f"{where}: weight shape {weight.shape} does not match ({layer.shape[0]}, "
                f"{previous[0]})"
            )
    else:
        if len(layer.shape) != 3 or len(previous) != 3:
            raise ExportError(f"{where}: conv input and output shapes must be (C, H, W)")
        expected = _conv_shape(previous, weight.shape, layer)
        if (
            weight.ndim != 4
            or previous[0] != weight.shape[1] * layer.groups
            or expected != layer.shape
        ):
            raise ExportError(
                f"{where}: weight {weight.shape} on input {previous} gives {expected}, "
                f"but the layer says {layer.shape}"
            )
        if layer.delay is not None:
            raise ExportError(
                f"{where}: netx ignores delays on conv layers; move them to a dense layer"
            )


def _check_weights(layer: Layer, weight: np.ndarray, where: str) -> None:
    combined = (
        weight
        if layer.weight_rec is None
        else np.hstack([weight, _check_int_array(layer.weight_rec, "recurrent weights", where)])
    )
    if layer.kind == "dense_rec" and (
        layer.weight_rec is None or layer.weight_rec.shape != (layer.shape[0],) * 2
    ):
        raise ExportError(
            f"{where}: a dense_rec layer needs weight_rec shaped {(layer.shape[0],) * 2}"
        )
    if layer.kind != "dense_rec" and layer.weight_rec is not None:
        raise ExportError(f"{where}: only dense_rec layers have recurrent weights")
    if not combined.any():
        raise ExportError(
            f"{where}: all weights are zero; netx cannot load that (its weight-bit optimiser "
            "divides "
            "by the largest weight). The layer's output then depends on its bias only: remove the "
            "layer or retrain"
        )
    low, high = weight_range(combined)
    if combined.min() < low or combined.max() > high:
        worst = combined.max() if combined.max() > high else combined.min()
        raise ExportError(
            f"{where}: weight {int(worst)} is outside netx's 8-bit range [{low}, {high}]; "
            "rescale the layer so its largest weight fits"
        )
    _check_netx_weights(
        combined, weight.shape[1] if weight.ndim == 2 else combined.shape[-1], where
    )


def _check_bias(layer: Layer, where: str) -> None:
    bias = _check_int_array(layer.bias, "biases", where)
    channels = layer.shape[0]
    if bias.shape not in ((channels,), ()):
        raise ExportError(f"{where}: bias must have shape ({channels},), got {bias.shape}")
    if bias.min() < BIAS_RANGE[0] or bias.max() > BIAS_RANGE[1]:
        worst = bias.max() if bias.max() > BIAS_RANGE[1] else bias.min()
        raise ExportError(
            f"{where}: bias {int(worst)} is outside Loihi's 13-bit range {list(BIAS_RANGE)}; "
            "rescale the layer"
        )


def _check_delay(layer: Layer, weight: np.ndarray, where: str) -> None:
    delay = _check_int_array(layer.delay, "delays", where)
    if delay.shape != weight.shape:
        raise ExportError(
            f"{where}: delay must be shaped like the weight {weight.shape}, got {delay.shape}"
        )
    if delay.min() < 0 or delay.max() > MAX_DELAY:
        raise ExportError(
            f"{where}: delays must be in [0, {MAX_DELAY}], got "
            f"{int(delay.min())}..{int(delay.max())}"
        )


def _check_neuron(layer: Layer, where: str) -> None:
    neuron = layer.neuron
    if neuron is None:
        raise ExportError(f"{where}: has no neuron parameters")
    for name, value, high in (
        ("v_th_mant", neuron.v_th_mant, VTH_MAX),
        ("i_decay", neuron.i_decay, DECAY_UNITY),
        ("v_decay", neuron.v_decay, DECAY_UNITY),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not 0 <= value <= high
        ):
            raise ExportError(f"{where}: {name} must be an integer in [0, {high}], got {value!r}")
    for name, state in (("u_init", neuron.u_init), ("v_init", neuron.v_init)):
        if state is not None:
            array = _check_int_array(state, name, where)
            if array.shape not in ((), tuple(layer.shape)):
                raise ExportError(
                    f"{where}: {name} must be a scalar or shaped {layer.shape}, got {array.shape}"
                )
            if np.abs(array).max() >= 2**23:
                raise ExportError(f"{where}: {name} exceeds the 24-bit state range")


def _conv_shape(
    previous: tuple[int, ...], kernel: tuple[int, ...], layer: Layer
) -> tuple[int, ...]:
    if len(kernel) != 4:
        return ()
    sizes = []
    for axis in (0, 1):
        span = layer.dilation[axis] * (kernel[2 + axis] - 1) + 1
        sizes.append(
            (previous[1 + axis] + 2 * layer.padding[axis] - span) // layer.stride[axis] + 1
        )
    return (kernel[0], *sizes)


def _check_netx_weights(combined: np.ndarray, split: int, where: str) -> None:
    """Raise unless netx + Lava's Dense model use exactly the integers written.

    Reproduces ``netx.utils.optimize_weight_bits`` on the (hstacked) weights and then, per
    synapse (feed-forward and recurrent separately, each with its own sign mode, as the
    ``RecurrentDense`` block builds them), Lava's ``clip_weights`` and ``truncate_weights``.
    """
    top, bottom = int(combined.max()), int(combined.min())
    signed = int(bottom < 0 <= top)
    if top < 0:
        scale = -256 / bottom
    elif bottom >= 0:
        scale = 255 / top
    else:
        scale = min(127 / top if top > 0 else np.inf, -128 / bottom)
    shift = int(np.floor(np.log2(scale))) + signed
    zeros = next((n for n in range(8, -1, -1) if not (combined % (1 << n)).any()), 0) - signed
    bits = 8 - shift - zeros
    if shift < 0:
        raise ExportError(f"{where}: weights do not fit netx's 8-bit synapse")
    shifted = combined.reshape(combined.shape[0], -1) << shift
    blocks = (
        [shifted]
        if split == shifted.shape[1] or combined.ndim != 2
        else [shifted[:, :split], shifted[:, split:]]
    )
    for block in blocks:
        inhibitory = block.min() < 0 and block.max() <= 0
        mixed = block.min() < 0 < block.max()
        value = -block if inhibitory else block
        cut = 8 - bits + int(mixed)
        kept = cut >= 0 and np.array_equal(np.clip(value, -256 if mixed else 0, 255), value)
        if not kept or not np.array_equal((value >> cut) << cut, value):
            raise ExportError(
                f"{where}: netx would not load these weights exactly (Lava truncates the "
                "feed-forward and recurrent synapses to one shared bit budget with separate sign "
                "modes); use even weights, or a recurrent weight of the same sign mix"
            )
