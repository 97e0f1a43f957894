"""Conversion hooks of the Quartz encoding, and its neuron layer module."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from snn_encodings.coding.quartz import decode_quartz, encode_quartz, quantise_quartz
from snn_encodings.conversion.exactness import merge_branch_gains
from snn_encodings.conversion.graph import WEIGHTED
from snn_encodings.conversion.quartz_fast import (
    quartz_bias_levels,
    quartz_fast_forward,
    quartz_layer_levels,
    quartz_quantise_bias,
)
from snn_encodings.conversion.rules.base import FastPass, NeuronLayer, Rule, constant_like
from snn_encodings.errors import ConversionError
from snn_encodings.functional.quartz import QuartzState, quartz_first_spikes
from snn_encodings.specs.quartz import Quartz

__all__ = ["QuartzLayer", "QuartzRule", "quartz_bias_levels", "quartz_twin_levels"]


def quartz_twin_levels(z: Tensor, spec: Quartz) -> Tensor:
    r"""The integer level :math:`\hat n` a Quartz neuron with pre-activation ``z`` fires at.

    .. math::
        u = \mathrm{snap}_{2^{-q}}(Kz), \qquad \hat n = q(u)

    with :math:`q(u) = \lfloor u + 1/2\rfloor` (``"round"``) or :math:`\lfloor u\rfloor`
    (``"floor"``): the neuron's membrane at the readout is :math:`u + 1` and it fires
    :math:`K - \hat n` steps later. After :meth:`QuartzRule.quantise_synapse` the exact
    :math:`Kz = \sum_j w_j n_j + K b` is a multiple of :math:`2^{-q}` (``weight_frac_bits``),
    so snapping the float ``z`` (which carries the rounding error of :math:`x = n/K`) back to
    that grid recovers it exactly, and a tie :math:`u = m + 1/2` goes the neuron's way.
    No clipping.
    """
    grid = float(2**spec.weight_frac_bits)
    u = torch.round(z * spec.t_max * grid) / grid
    return torch.floor(u + 0.5) if spec.rounding == "round" else torch.floor(u)


class QuartzLayer(NeuronLayer):
    r"""A layer of Quartz neurons over one window: currents ``(T, B, *)`` -> spikes ``(T, B, *)``.

    Runs :func:`~snn_encodings.functional.quartz.quartz_step` through ``simulate`` (or the
    loop-free :func:`~snn_encodings.functional.quartz.quartz_first_spikes` with
    ``spec.analytic``; the spikes are equal) with ``rectify`` as a step override, and
    :meth:`after` shifts the spikes :math:`K` steps earlier so they sit on the next layer's
    input times. A spike in the first :math:`K + 1` steps (only possible with inputs above 1)
    is placed at step 0, the largest value, 2. Adapters that run the step loop themselves call
    :meth:`before` and :meth:`after` around it (see
    :class:`~snn_encodings.conversion.rules.base.NeuronLayer`).

    Counters, accumulated over forward calls until :meth:`reset_counters`:
    ``neurons`` (neurons times samples), ``spikes``, ``early_spikes`` (spikes during the encode
    phase, before the readout step :math:`2K`: the neuron crossed threshold while inputs were
    still arriving, Lenz et al. Sec. 6.2; its value then differs from the ANN twin). Only the
    paper mode fires early; in exact mode the counter stays 0.
    ``last_early`` is the bool mask ``(B, *)`` of early spikes in the last call.

    With ``spec.analytic`` a converted network does not call its layers: it computes every
    fire time from value passes (:meth:`QuartzRule.fast_forward`) and updates these counters
    and ``last_state`` itself, so forward hooks on the layers do not run.

    Args:
        spec: encoding parameters.
        rectify: use the rectifier (hidden layers) or not (the output layer).
    """

    def __init__(self, spec: Quartz, *, rectify: bool = True) -> None:
        super().__init__(spec, output=not rectify)
        self.spec: Quartz = spec
        self.rectify = rectify
        self.last_early: Tensor | None = None
        self.reset_counters()

    @property
    def last_state(self) -> QuartzState | None:
        """The state after the last call; after a closed-form pass it is built here, on first
        read (it costs more than the pass's own work and is rarely read)."""
        pending = self.__dict__.get("_pending_state")
        if pending is not None:
            kz, fired, dtype = pending
            steps = self.spec.steps_per_layer
            # a neuron that did not fire (output layer only) ends the window ramping:
            # v = Kz + 2K, i = 1
            self.__dict__["_last_state"] = QuartzState(
                v=(kz + self.spec.read_step).masked_fill_(fired, 0.0).to(dtype),
                i=(~fired).to(dtype),
                t=constant_like(kz, steps, torch.int64),
                fired=fired,
            )
            self.__dict__["_pending_state"] = None
        return self.__dict__.get("_last_state")

    @last_state.setter
    def last_state(self, state: QuartzState | None) -> None:
        self.__dict__["_last_state"] = state
        self.__dict__["_pending_state"] = None

    def defer_state(self, kz: Tensor, fired: Tensor, dtype: torch.dtype) -> None:
        """Set ``last_state`` to the end of a window whose readout membrane (minus one) was
        ``kz`` = :math:`Kz` and whose neurons in ``fired`` spiked, in ``dtype``; built on first
        read. ``kz`` must not change afterwards."""
        self.__dict__["_pending_state"] = (kz, fired, dtype)

    def reset_counters(self) -> None:
        """Zero ``neurons``, ``spikes`` and ``early_spikes``."""
        self.neurons = 0
        self.spikes = 0
        self.early_spikes = 0

    @property
    def early_fraction(self) -> float:
        """Fraction of neurons that fired during the encode phase (0 before any call)."""
        return self.early_spikes / self.neurons if self.neurons else 0.0

    @property
    def step_options(self) -> dict[str, Any]:
        """``{"rectify": ...}``: the output layer steps without the rectifier."""
        return {"rectify": self.rectify}

    def before(self, currents: Tensor) -> Tensor:
        """Check that ``currents`` span one window of ``4 * t_max`` steps."""
        spec = self.spec
        if currents.dim() < 2 or currents.shape[0] != spec.steps_per_layer:
            raise ConversionError(
                f"QuartzLayer: expected {spec.steps_per_layer} steps (4 * t_max), got shape "
                f"{tuple(currents.shape)}; build the network with the same spec"
            )
        return currents

    def run(self, currents: Tensor) -> tuple[Tensor, Any]:
        """``quartz_first_spikes`` with ``spec.analytic`` (no gradient path, so only without
        a ``surrogate``), else the step loop."""
        if self.spec.analytic and self.surrogate is None:
            return quartz_first_spikes(currents, self.spec, rectify=self.rectify)
        return super().run(currents)

    def after(self, spikes: Tensor, state: Any) -> Tensor:
        """Count the spikes, then shift them :math:`K` steps earlier (``layer_latency``)."""
        spec = self.spec
        self.last_state = state
        self.last_early = spikes[: spec.read_step].any(dim=0)
        self.neurons += spikes[0].numel()
        self.spikes += int(spikes.sum().item())
        self.early_spikes += int(spikes[: spec.read_step].sum().item())
        k = spec.layer_latency
        out = torch.zeros_like(spikes)
        out[: spikes.shape[0] - k] = spikes[k:]
        out[0] = spikes[: k + 1].sum(dim=0)
        return out

    def extra_repr(self) -> str:
        return f"t_max={self.spec.t_max}, rectify={self.rectify}, analytic={self.spec.analytic}"


class QuartzRule(Rule):
    r"""Conversion hooks of Quartz (Lenz et al. 2023), exact against its ANN twin.

    **Exactness.** The network runs in float64; :meth:`quantise_synapse` rounds weights to
    multiples of :math:`2^{-q}` and biases to the same grid (or to :math:`1/K` with
    ``bias_coding="time"``). Every current and membrane
    is then a sum of integer levels times products of grid values (a weight, two branch gains
    of a residual shortcut, two chained convolutions, an average pool's :math:`2^{-m}`), exact
    in any summation order while it fits the significand; ``convert`` checks that bound per
    layer and warns where it does not hold (see
    :mod:`~snn_encodings.conversion.exactness`). The twin (:meth:`layer_twin`) forms
    :math:`Kz` in the same level units, so it needs no rounding repair whatever the grid. The
    decoded output equals the twin bit for bit in exact mode (``Quartz.mode``), and in paper
    mode unless a neuron fires early (``QuartzLayer.early_spikes``). The closed form
    (``analytic``) evaluates each layer in float32 where that is exact.
    """

    dtype = torch.float64
    supports_max_pool = True

    def __init__(self, spec: Quartz) -> None:
        if not isinstance(spec, Quartz):
            raise TypeError(f"QuartzRule needs a Quartz spec, got {type(spec).__name__}")
        super().__init__(spec)
        self.spec: Quartz = spec

    @property
    def equals_twin(self) -> bool:
        """``True`` in exact mode (the paper mode's neurons may differ from the twin)."""
        return self.spec.mode == "exact"

    def twin(self, z: Tensor) -> Tensor:
        r"""Hidden activation: :math:`\mathrm{clip}(\hat n, 0, K)/K` (ReLU on the grid)."""
        k = self.spec.t_max
        return quartz_twin_levels(z, self.spec).clamp(0, k) / k

    def twin_output(self, z: Tensor) -> Tensor:
        r"""Output value: :math:`\mathrm{clip}(\hat n, -K, K)/K`; :math:`-1` means silent."""
        k = self.spec.t_max
        return quartz_twin_levels(z, self.spec).clamp(-k, k) / k

    def sum_units(self) -> tuple[float, float, float]:
        """Level units: inputs at most :math:`K`, bias :math:`Kb`, and up to :math:`2K` of
        readout ramp on top of the sum."""
        k = float(self.spec.t_max)
        return k, k, 2 * k

    def finalize(self, network: nn.Module, calibration: Any) -> None:
        """Warn where a layer's sums may not be exact (``SpikingNetwork.check_exactness``)."""
        network.check_exactness()  # type: ignore[operator]

    def layer_twin(self, synapse: nn.Module, values: list[Tensor], *, output: bool) -> Tensor:
        r"""The twin in level units: :math:`\hat n = q(Kz)` with :math:`Kz` from the integer
        levels :math:`n = Kx` of the sources (:func:`quartz_layer_levels`, exact whatever the
        product of grids in a branch), clipped to :math:`[0, K]` (hidden) or :math:`[-K, K]`
        (output), over :math:`K`. Equal to :meth:`twin` of ``synapse.value(values)`` where that
        sum is exact."""
        spec = self.spec
        k = spec.t_max
        kz = quartz_layer_levels(synapse, [torch.round(value * k) for value in values], spec)
        n_hat = torch.floor(kz + 0.5) if spec.rounding == "round" else torch.floor(kz)
        return n_hat.clamp(-k if output else 0, k) / k

    def calibration_percentile(self) -> float | None:
        return self.spec.percentile

    def twin_parameters(self) -> tuple[int | None, float, float]:
        """``(K, 1/2 or 0, 1)``: the twin as a ``clip_quant`` (for fine-tuning)."""
        return self.spec.t_max, 0.5 if self.spec.rounding == "round" else 0.0, 1.0

    def quantise_values(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        r"""Weights to multiples of :math:`2^{-q}`; biases as ``spec.bias_coding`` carries them
        (:func:`~snn_encodings.conversion.quartz_fast.quartz_quantise_bias`: the same grid, or
        :math:`1/K` clipped to :math:`[-2, 2]` as the authors' ``quantize_parameters`` does so
        that the bias spike lands on a step)."""
        grid = float(2**self.spec.weight_frac_bits)
        weight = torch.round(weight * grid) / grid
        return weight, quartz_quantise_bias(bias, self.spec)

    def quantise_synapse(self, synapse: nn.Module) -> None:
        """Move ``synapse`` to float64 and put its weights, gains and bias on the grids.

        Weights of every Conv/Linear op and the branch gains (a weightless branch's two gains
        multiplied first, :func:`merge_branch_gains`) go to multiples of :math:`2^{-q}`, the
        bias to :math:`1/K` (:meth:`quantise_values`), so that currents
        are exact sums (see the class docstring).
        """
        synapse.to(torch.float64)
        merge_branch_gains(synapse)
        grid = float(2**self.spec.weight_frac_bits)
        with torch.no_grad():
            for module in synapse.modules():
                if isinstance(module, WEIGHTED):
                    module.weight.copy_(torch.round(module.weight * grid) / grid)
                    if module.bias is not None:
                        raise ConversionError(
                            "QuartzRule.quantise_synapse: branch ops must be bias-free; the "
                            "bias belongs to the synapse"
                        )
            for name, buffer in synapse.named_buffers():
                if name.startswith(("in_gain_", "out_gain_")):
                    buffer.copy_(torch.round(buffer * grid) / grid)
            bias = getattr(synapse, "bias", None)
            if isinstance(bias, Tensor):
                bias.copy_(self.quantise_bias(bias))

    def quantise_bias(self, bias: Tensor) -> Tensor:
        """On the weights' grid or :math:`1/K` (:func:`quartz_quantise_bias`)."""
        return quartz_quantise_bias(bias, self.spec)

    def encode_input(self, x: Tensor) -> Tensor:
        return encode_quartz(x, self.spec)

    def decode_input(self, x: Tensor) -> Tensor:
        return quantise_quartz(x, self.spec)

    def bias_currents(self, bias: Tensor, steps: int) -> Tensor:
        r"""The bias relay's spike, ``(T, *)``: weight :math:`b` at step :math:`K`
        (``bias_coding="weight"``) or weight :math:`\mathrm{sign}(n_b)` at step
        :math:`2K - |n_b|` (``"time"``).

        Either adds :math:`n_b = Kb` to the membrane at the readout (the readout cancels its
        weight).
        """
        spec = self.spec
        if steps != spec.steps_per_layer:
            raise ConversionError(
                f"QuartzRule.bias_currents: the window has {spec.steps_per_layer} steps, got "
                f"{steps}"
            )
        currents = torch.zeros((steps, *bias.shape), dtype=bias.dtype, device=bias.device)
        if spec.bias_coding == "weight":
            currents[spec.t_max] = bias
            return currents
        levels = quartz_bias_levels(bias, spec)
        times = (2 * spec.t_max - levels.abs()).to(torch.int64)
        currents.scatter_(0, times.unsqueeze(0), torch.sign(levels).unsqueeze(0))
        return currents

    def neuron_layer(self, output: bool) -> nn.Module:
        """Hidden layers rectify (they replace ReLUs); the output layer does not."""
        return QuartzLayer(self.spec, rectify=not output)

    def decode_output(self, spikes: Tensor, layer: nn.Module) -> Tensor:
        return decode_quartz(spikes, self.spec)

    def fast_forward(self, network: nn.Module, x: Tensor) -> FastPass | None:
        """With ``spec.analytic`` (and no surrogate), the fire times of every layer from a few
        value passes (:func:`~snn_encodings.conversion.quartz_fast.quartz_fast_forward`);
        spikes, outputs and counters equal the simulation's. Otherwise ``None``."""
        if not self.spec.analytic:
            return None
        for module in network.modules():
            if isinstance(module, QuartzLayer) and module.surrogate is not None:
                return None
        return quartz_fast_forward(network, x)  # type: ignore[arg-type]

    def max_pool(self, spikes: Tensor, pool: nn.Module) -> Tensor:
        r"""Earliest spike wins: pool the has-fired trains, then keep each window's first step.

        With one spike per neuron, :math:`F_t = \sum_{s \le t} s_s \in \{0, 1\}`; max-pooling
        :math:`F` and differencing in time gives one spike at the earliest input spike, whose
        value is the maximum (values decrease with time).
        """
        fired = torch.cumsum(spikes, dim=0).clamp(max=1)
        steps, batch = spikes.shape[:2]
        pooled = pool(fired.flatten(0, 1))
        pooled = pooled.unflatten(0, (steps, batch))
        return torch.diff(pooled, dim=0, prepend=torch.zeros_like(pooled[:1]))
