r"""Conversion hooks of the radix encoding.

Exactness: the spiking network runs in float64 and :meth:`RadixRule.quantise_synapse` puts the
normalised weights, branch gains and biases on a dyadic grid (integers times :math:`2^{-k}`,
``k = spec.weight_bits``) in exact mode. For bases that are powers of two the inputs and
activations are dyadic too, so every product and sum the SNN and its twin form is exact in
float64 whatever the summation order, as long as it needs at most 53 significant bits
(:math:`k` + :math:`T \log_2 r` + the integer bits of :math:`\sum |w|`; about 41 for the
default ``weight_bits=12``, ``T=8`` and a fan-in of a few thousand). The SNN's decoded outputs then
equal the twin's bit for bit. For other bases (3, 5, ...) the grid :math:`r^{-T}` is not a
float grid; the twin snaps :math:`r^T z` to :math:`2^{-(k+8)}` before its floor
(:func:`~snn_encodings.functional.radix.snap_to_grid`), which repairs the ANN's rounding when
every branch is weights on the :math:`2^{-k}` grid, possibly with average pooling over a
power-of-two number of elements (up to 256); a per-channel gain left in a branch breaks it.

Paper mode quantises weights to :math:`T` fractional base-:math:`r` digits (:math:`D = T`, the
precondition of its exactness) and biases to :math:`2T`; it is exact (with the layer's
saturation) for bases that are powers of two.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from snn_encodings.coding.radix import decode_radix, encode_radix
from snn_encodings.conversion.exactness import merge_branch_gains
from snn_encodings.conversion.graph import WEIGHTED
from snn_encodings.conversion.rules.base import FastPass, NeuronLayer, Rule, constant_like
from snn_encodings.errors import SpecError
from snn_encodings.functional.grid import grid_quantise
from snn_encodings.functional.radix import (
    RadixState,
    radix_twin,
    radix_twin_parameters,
    snap_to_grid,
)
from snn_encodings.specs.radix import Radix

__all__ = ["RadixLayer", "RadixRule"]


def _power_of_two_exponent(base: int) -> int | None:
    exponent = int(math.log2(base))
    return exponent if 2**exponent == base else None


#: Extra grid bits the snap allows for average pooling (power-of-two sizes up to 256 elements).
_POOL_BITS = 8


def _snap_bits(spec: Radix) -> int | None:
    """Grid bits that repair the twin's rounding of r^T z; None where float64 is already exact."""
    if _power_of_two_exponent(spec.base) is not None or spec.mode == "paper":
        return None
    return spec.weight_bits + _POOL_BITS


class RadixLayer(NeuronLayer):
    r"""A layer of radix neurons over one window: currents ``(L, B, *)`` -> spikes ``(L, B, *)``.

    ``L = spec.steps_per_layer``. Hidden layers (``output=False``):

    - exact mode: pads ``L`` zero steps, runs :func:`~snn_encodings.functional.loop.simulate`
      over ``2L`` steps and returns the last ``L`` (the output digits, MSB first), i.e.
      :math:`\lfloor \mathrm{clip}(z, 0, 1 - r^{-T}) \rfloor_T` with
      :math:`z = \sum_j r^{-(j+1)} I_j`;
    - paper mode: scales the currents by :math:`r^D` (integer frame), pads :math:`D` zero digit
      slots, simulates :math:`T + D` slots, keeps the last :math:`T` (dropping the :math:`D`
      least significant digits, the paper's alignment) and, with ``saturate``, replaces the
      digits by :math:`r - 1` where the final membrane is :math:`\ge 1` (overflow; the paper's
      neuron would wrap). ``delay`` is :math:`D`, default :math:`T`.

    The output layer (``output=True``) does not fire: it integrates its window with the exact
    neuron (paper mode: after reversing the LSB-first digit slots) and exposes the
    non-rectified value :math:`z` = ``last_state.v`` :math:`/ r^T` as :attr:`readout`; it
    returns zero spikes.

    The padding, scaling and slot reversal live in :meth:`before`, the slicing, saturation and
    readout in :meth:`after`, so adapters running their own step loop reproduce the layer (see
    :class:`~snn_encodings.conversion.rules.base.NeuronLayer`).

    Attributes:
        last_state: the :class:`~snn_encodings.functional.radix.RadixState` after the last call.
        readout: output layers only: the decoded value ``(B, *)`` after the last call.
    Example:
        >>> layer = RadixLayer(Radix(steps=3), output=False)
        >>> currents = torch.tensor([[1.0], [0.0], [1.0]], dtype=torch.float64)  # z = 0.625
        >>> layer(currents).flatten().tolist()
        [1.0, 0.0, 1.0]
    """

    def __init__(
        self, spec: Radix, *, output: bool, delay: int | None = None, saturate: bool = True
    ) -> None:
        super().__init__(spec, output=output)
        self.spec: Radix = spec
        self.delay = spec.steps if delay is None else delay
        self.saturate = saturate
        self.last_state: RadixState | None = None
        self.readout: Tensor | None = None

    @property
    def step_spec(self) -> Radix:
        """The output layer integrates with the exact neuron (also in paper mode)."""
        if self.output and self.spec.mode != "exact":
            return dataclasses.replace(self.spec, mode="exact")
        return self.spec

    def before(self, currents: Tensor) -> Tensor:
        """Check the window; pad (exact), scale and pad (paper), or reverse the digit slots
        (paper output layer)."""
        spec = self.spec
        window = spec.steps_per_layer
        if currents.dim() < 2 or currents.shape[0] != window:
            raise SpecError(
                f"RadixLayer: currents must be ({window}, B, *) for {spec!r}, got shape "
                f"{tuple(currents.shape)}"
            )
        if self.output:
            if spec.mode != "paper":
                return currents
            slots = currents.reshape(spec.steps, spec.substeps, *currents.shape[1:])
            return slots.flip(0).reshape(currents.shape)
        if spec.mode != "paper":
            return torch.cat([currents, torch.zeros_like(currents)])
        scaled = currents * float(spec.base**self.delay)
        pad = torch.zeros(
            (self.delay * spec.substeps, *currents.shape[1:]),
            dtype=currents.dtype,
            device=currents.device,
        )
        return torch.cat([scaled, pad])

    def after(self, spikes: Tensor, state: Any) -> Tensor:
        """Keep the window's output digits (saturated in paper mode), or, for the output layer,
        record :attr:`readout` and return zero spikes."""
        spec = self.spec
        self.last_state = state
        if self.output:
            self.readout = state.v / spec.levels
            return torch.zeros_like(spikes)
        if spec.mode != "paper":
            return spikes[spec.steps_per_layer :]
        spikes = spikes[self.delay * spec.substeps :]
        if self.saturate:
            spikes = torch.where(state.v >= 1, torch.ones_like(spikes), spikes)
        return spikes


class RadixRule(Rule):
    """Conversion hooks of :class:`~snn_encodings.specs.radix.Radix` (see the module docs).

    - twin: :func:`~snn_encodings.functional.radix.radix_twin` with grid snapping;
    - input: pixels in [0, 1] quantised to :math:`T` digits (values :math:`\\ge 1` saturate),
      :meth:`decode_input` returns the quantised value the twin must see;
    - bias: one current at the window's first step, sized so that it adds exactly :math:`b` to
      the decoded value (:math:`r b` in exact mode; :math:`r^T b` in paper mode, which the layer
      scales by :math:`r^D`);
    - output layer: the integrated, non-rectified value (:class:`RadixLayer` ``readout``);
    - max-pooling: in the value domain (decode, pool, re-encode), exact because the maximum of
      grid values is a grid value; for MSB-first codes it equals the online comparator.

    Example:
        >>> rule = RadixRule(Radix(steps=2))
        >>> rule.twin(torch.tensor([0.3, 1.2], dtype=torch.float64)).tolist()
        [0.25, 0.75]
    """

    dtype = torch.float64
    supports_max_pool = True

    def __init__(self, spec: Radix) -> None:
        if not isinstance(spec, Radix):
            raise TypeError(f"RadixRule needs a Radix spec, got {type(spec).__name__}")
        if not spec.is_radix_setting:
            raise SpecError(
                f"convert: {spec!r} needs leak = threshold = 1/base for exact radix arithmetic"
            )
        super().__init__(spec)
        self.spec: Radix = spec

    @property
    def equals_twin(self) -> bool:
        """``True`` in exact mode (the paper mode's neurons may differ from the twin)."""
        return self.spec.mode == "exact"

    # --- ANN twin -------------------------------------------------------------------------
    def twin_parameters(self) -> tuple[int | None, float, float]:
        """``(levels, shift, upper)`` as a function of the ANN's pre-activation: exact mode
        rounds (shift 1/2, from :meth:`hidden_bias_shift`), paper mode floors."""
        levels, shift = radix_twin_parameters(self.spec)
        shift += self.hidden_bias_shift() * levels
        return levels, shift, 1.0 - 1.0 / levels

    def hidden_bias_shift(self, levels: int | None = None, shift: float = 0.0) -> float:
        r"""Half an output step, :math:`r^{-T}/2`, in exact mode: the neuron emits the digits of
        :math:`\lfloor r^T z \rfloor`, and with the shifted bias that is :math:`r^T z` rounded
        to the nearest level (halves up) instead of floored, which removes the floor's
        systematic half-step loss per layer (as IC-SNN's :math:`v_0 = \theta/2` does for rate
        coding). A layer whose ANN activation is a :class:`~snn_encodings.conversion.twin.ClipQuant`
        on this encoding's grid keeps that activation's own shift (a floor stays a floor). The
        shift is on the bias grid for ``steps * log2(base) < weight_bits``. Paper mode keeps the
        paper's floor (0)."""
        if self.spec.mode != "exact":
            return 0.0
        own = shift if levels == self.spec.levels else 0.5
        return own / self.spec.levels

    def twin(self, z: Tensor) -> Tensor:
        return radix_twin(z, self.spec, snap_bits=_snap_bits(self.spec))

    def twin_output(self, z: Tensor) -> Tensor:
        bits = _snap_bits(self.spec)
        if bits is None:
            return z
        levels = self.spec.levels
        return snap_to_grid(z * levels, bits) / levels

    def quantise_weight(self, weight: Tensor) -> Tensor:
        """Round normalised weights (and branch gains) to :math:`2^{-k}` (exact mode) or
        :math:`r^{-T}` (paper mode)."""
        spec = self.spec
        scale = float(2**spec.weight_bits) if spec.mode == "exact" else float(spec.levels)
        return torch.round(weight * scale) / scale

    def quantise_bias(self, bias: Tensor) -> Tensor:
        """Round normalised biases to :math:`2^{-k}` (exact mode) or :math:`r^{-2T}` (paper mode)."""
        spec = self.spec
        scale = float(2**spec.weight_bits) if spec.mode == "exact" else float(spec.levels) ** 2
        return torch.round(bias * scale) / scale

    def quantise_synapse(self, synapse: nn.Module) -> None:
        """Round weights, gains (a weightless branch's two gains multiplied first,
        :func:`merge_branch_gains`) and biases to the mode's grids, in place."""
        merge_branch_gains(synapse)
        with torch.no_grad():
            for module in synapse.modules():
                if isinstance(module, WEIGHTED):
                    module.weight.copy_(self.quantise_weight(module.weight))
                    if module.bias is not None:
                        module.bias.copy_(self.quantise_bias(module.bias))
            for name, buffer in synapse.named_buffers(recurse=False):
                if name.startswith(("in_gain_", "out_gain_")):
                    buffer.copy_(self.quantise_weight(buffer))
                elif name == "bias":
                    buffer.copy_(self.quantise_bias(buffer))

    def sum_units(self) -> tuple[float, float, float] | None:
        """Units of the output's last digit :math:`r^{-T}` (exact mode, power-of-two base): inputs
        at most :math:`r^T`, bias :math:`r^T b`; ``None`` otherwise (paper mode works in digit
        frames, other bases snap the twin instead)."""
        spec = self.spec
        if spec.mode != "exact" or _power_of_two_exponent(spec.base) is None:
            return None
        return float(spec.levels), float(spec.levels), 0.0

    def finalize(self, network: nn.Module, calibration: Any) -> None:
        """Warn where a layer's sums may not be exact (``SpikingNetwork.check_exactness``)."""
        network.check_exactness()  # type: ignore[operator]

    # --- spiking network ------------------------------------------------------------------
    def encode_input(self, x: Tensor) -> Tensor:
        return encode_radix(x.to(self.dtype), self.spec, overflow="saturate")

    def decode_input(self, x: Tensor) -> Tensor:
        """``decode_radix(encode_input(x))`` without the spike trains: the digit code
        :func:`~snn_encodings.coding.radix.quantise_radix` over :math:`r^T` (what ``decode_radix``
        computes from its digits); inputs ``encode_radix`` refuses still go through it, so they
        raise its error."""
        if x.numel() and bool(x.amin() < 0):
            return decode_radix(self.encode_input(x), self.spec).to(x.dtype)
        levels = self.spec.levels
        return grid_quantise(x.to(self.dtype), levels, low=0, high=levels - 1).to(x.dtype)

    def bias_currents(self, bias: Tensor, steps: int) -> Tensor:
        spec = self.spec
        if steps != spec.steps_per_layer:
            raise SpecError(
                f"RadixRule.bias_currents: the window of {spec!r} is {spec.steps_per_layer} "
                f"steps, got {steps}"
            )
        currents = torch.zeros((steps, *bias.shape), dtype=bias.dtype, device=bias.device)
        factor = spec.base if spec.mode == "exact" else spec.levels
        currents[0] = bias * float(factor)
        return currents

    def neuron_layer(self, output: bool) -> nn.Module:
        return RadixLayer(self.spec, output=output)

    def decode_output(self, spikes: Tensor, layer: nn.Module) -> Tensor:
        if getattr(layer, "output", False):
            readout = getattr(layer, "readout", None)
            if readout is None:
                raise SpecError("RadixRule.decode_output: run the output layer before decoding it")
            return readout
        return decode_radix(spikes, self.spec)

    def fast_forward(self, network: nn.Module, x: Tensor) -> FastPass | None:
        r"""Closed form of exact mode (power-of-two bases, no surrogate): one value pass.

        A hidden exact-mode layer emits the base-:math:`r` digits of its twin value
        :math:`y = \lfloor \mathrm{clip}(z, 0, 1 - r^{-T}) \rfloor_T`, MSB first, one window
        later, and ends its padded window with ``v = acc = 0``; the output layer ends with
        ``v`` :math:`= r^T z` and reads out :math:`z`. So the twin values of every node give the
        outputs, every layer's ``last_state`` and ``readout`` and, while the network counts,
        each neuron's spike count (the digit sum of :math:`r^T y`), equal to the simulation's.
        Otherwise (paper mode, other bases, a surrogate) ``None``: simulate.
        """
        spec = self.spec
        layers = [m for m in network.modules() if isinstance(m, RadixLayer)]
        if (
            spec.mode != "exact"
            or _power_of_two_exponent(spec.base) is None
            or any(layer.surrogate is not None for layer in layers)
        ):
            return None
        values = network.activations(x, narrow=True)  # type: ignore[operator]
        values[-1] = values[-1].to(x.dtype)  # the readout, in the network's dtype
        for stage, value in zip(network.stages, values[1:]):  # type: ignore[attr-defined]
            if stage.neurons is not None:
                self._set_final_state(stage.neurons, value, x.dtype)
        counting = bool(network.counting)  # type: ignore[attr-defined]
        counts = [self.digit_sums(value) for value in values] if counting else []
        if counts:
            counts[-1] = torch.zeros_like(counts[-1])  # the output layer does not fire
        return FastPass(output=values[-1], spikes=counts)

    def _set_final_state(self, layer: RadixLayer, value: Tensor, dtype: torch.dtype) -> None:
        """The state (and output readout) the step simulation leaves after its window, in
        ``dtype`` (constant fields as expanded, read-only views)."""
        spec = self.spec
        zeros = constant_like(value, 0, dtype)
        if layer.output:
            layer.readout = value
            v = value * float(spec.levels)
            layer.last_state = RadixState(
                v=v, acc=zeros, k=constant_like(value, spec.steps_per_layer, torch.int64)
            )
        else:
            ticks = constant_like(value, 2 * spec.steps_per_layer, torch.int64)
            layer.last_state = RadixState(v=zeros, acc=zeros, k=ticks)

    def digit_sums(self, value: Tensor) -> Tensor:
        """Spikes of each neuron over a window: the sum of the base-:math:`r` digits of
        :math:`r^T y` for values ``y`` on the grid in :math:`[0, 1)`, ``(B, *)``."""
        spec = self.spec
        integer = torch.round(value * float(spec.levels)).to(torch.int64)
        total = torch.zeros_like(integer)
        for _ in range(spec.steps):
            total += integer % spec.base
            integer = integer // spec.base
        return total.to(value.dtype)

    def max_pool(self, spikes: Tensor, pool: nn.Module) -> Tensor:
        values = decode_radix(spikes, self.spec)
        return encode_radix(pool(values), self.spec)
