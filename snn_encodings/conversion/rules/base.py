"""The per-encoding hooks of the conversion pipeline.

The pipeline (trace, fold, calibrate, normalise, build, evaluate) is shared by every encoding.
What differs between encodings lives in one :class:`Rule` subclass per spec class, named by
the encoding's record (:mod:`snn_encodings.encoding`). All tensors in the spiking network are
time-first ``(T, B, *)`` in one *window* of ``spec.steps_per_layer`` steps; a layer whose output
comes later than its input re-aligns its output to the window and reports the shift as
``spec.layer_latency``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snn_encodings.conversion.twin import clip_quant
from snn_encodings.encoding import encoding_for, register_encoding
from snn_encodings.errors import ConversionError
from snn_encodings.functional.loop import simulate
from snn_encodings.functional.surrogate import Surrogate
from snn_encodings.specs.base import Spec

__all__ = ["FastPass", "NeuronLayer", "Rule", "constant_like", "register_rule", "rule_for"]


class NeuronLayer(nn.Module):
    """Base of the rules' neuron layers: one window of currents ``(T, B, *)`` -> spikes.

    ``forward(currents)`` is ``after(*run(before(currents)))``: the step loop :meth:`run`
    (``simulate`` of :attr:`step_spec` with the keyword overrides :attr:`step_options`, from
    the membrane :meth:`initial_v`) framed by two hooks that hold everything a layer does
    besides stepping its neurons: :meth:`before` prepares the currents (check the window,
    pad, scale), :meth:`after` re-aligns the spikes to the window (shift, slice, saturate)
    and records ``last_state`` and any counters.

    An adapter that runs the step loop with its own framework module (a Norse layer, a
    SpikingJelly node) calls the same two hooks around it, and so reproduces this layer spike
    for spike without re-implementing its alignment::

        prepared = layer.before(currents)
        spikes, state = framework_layer(prepared)   # steps layer.step_spec with layer.step_options
        out = layer.after(spikes, state)

    Attributes:
        spec: the encoding's spec.
        output: whether this is the output layer.
        surrogate: gradient stand-in handed to the steps of :meth:`run` (``None``: no spike
            gradient), e.g. to train the converted network; spikes stay exact.
        last_state: the encoding's state after the last call (``None`` before).
    """

    def __init__(self, spec: Spec, *, output: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.output = output
        self.surrogate: Surrogate | None = None
        self.last_state: Any = None

    @property
    def step_spec(self) -> Spec:
        """The spec whose step function :meth:`run` loops (default: :attr:`spec`)."""
        return self.spec

    @property
    def step_options(self) -> dict[str, Any]:
        """Keyword overrides handed to every step (e.g. ``rectify=False``); default none."""
        return {}

    def initial_v(self, like: Tensor) -> Tensor | None:
        """Initial membrane for one step's shape ``like`` ``(B, *)``; ``None``: the spec's."""
        return None

    def before(self, currents: Tensor) -> Tensor:
        """Currents ``(T, B, *)`` of the window -> the currents the step loop runs over."""
        return currents

    def run(self, currents: Tensor) -> tuple[Tensor, Any]:
        """The step loop: ``(spikes, final_state)`` of ``simulate`` over ``currents``."""
        out = simulate(
            self.step_spec,
            currents,
            v0=self.initial_v(currents[0]),
            surrogate=self.surrogate,
            check=False,
            **self.step_options,
        )
        return out.spikes, out.state

    def after(self, spikes: Tensor, state: Any) -> Tensor:
        """Spikes and final state of the step loop -> the layer's output spikes in the window."""
        self.last_state = state
        return spikes

    def forward(self, currents: Tensor) -> Tensor:
        return self.after(*self.run(self.before(currents)))


class Rule:
    """Hooks one encoding gives the conversion pipeline. Subclass and register per spec class.

    Units: after normalisation every hidden activation is in threshold units, so a value of 1
    is the layer's calibrated scale :math:`\\lambda`.
    """

    #: Floating-point dtype the spiking network runs in (float64 where exactness needs it).
    dtype: torch.dtype = torch.float32
    #: Whether spike trains are sparse in time, so that synapses skip silent steps.
    sparse_in_time: bool = True
    #: Whether max-pooling layers are supported (see :meth:`max_pool`).
    supports_max_pool: bool = True

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    @property
    def equals_twin(self) -> bool:
        """Whether the converted SNN's decoded outputs equal its ANN twin's on every input (so
        that measuring the twin measures the SNN). Default ``False``."""
        return False

    # --- ANN twin -------------------------------------------------------------------------
    def twin_parameters(self) -> tuple[int | None, float, float]:
        """``(levels, shift, upper)`` of the twin as a :func:`~snn_encodings.conversion.twin.clip_quant`.

        Used by :meth:`twin` and by quantisation-aware fine-tuning (:func:`finetune`).
        """
        return None, 0.0, 1.0

    def hidden_bias_shift(self, levels: int | None = None, shift: float = 0.0) -> float:
        """Added to a hidden layer's normalised bias before :meth:`quantise_synapse` (threshold
        units): how a rule turns its neurons' floor into rounding. ``levels`` and ``shift`` are
        the layer's :class:`~snn_encodings.conversion.twin.ClipQuant` grid where the ANN has
        one (``levels=None`` for a plain ReLU). Default 0."""
        return 0.0

    def quantise_layer(
        self, synapse: nn.Module, *, hidden: bool, levels: int | None = None, shift: float = 0.0
    ) -> None:
        """Put a layer's built synapse on the encoding's grids, in place: a hidden layer's bias
        first takes :meth:`hidden_bias_shift` (``levels``/``shift`` as there), then
        :meth:`quantise_synapse` rounds everything."""
        if hidden:
            synapse.bias.add_(self.hidden_bias_shift(levels, shift))
        self.quantise_synapse(synapse)

    def twin(self, z: Tensor) -> Tensor:
        """The activation the SNN reproduces, on normalised pre-activations ``z`` (any shape)."""
        levels, shift, upper = self.twin_parameters()
        return clip_quant(z, levels, shift, upper)

    def twin_output(self, z: Tensor) -> Tensor:
        """The output layer's value as the SNN decodes it (default: ``z`` unchanged)."""
        return z

    def layer_twin(self, synapse: nn.Module, values: list[Tensor], *, output: bool) -> Tensor:
        """Twin activation ``(B, *)`` of one layer from the twin values of the nodes before it.

        ``synapse`` is the layer's :class:`~snn_encodings.conversion.synapse.Synapse`.
        Default: :meth:`twin_output` (output layer) or :meth:`twin` of ``synapse.value(values)``;
        a rule may compute the same function in other units to keep it exact.
        """
        z = synapse.value(values)
        return self.twin_output(z) if output else self.twin(z)

    def sum_units(self) -> tuple[float, float, float] | None:
        """``(source_max, bias_scale, margin)`` of the exact sums, ``None`` where none is claimed.

        In the integer units the spiking network's sums are exact in, every value node's
        inputs are at most ``source_max``, the bias map is ``bias_scale`` times the synapse's
        ``bias`` and the membrane may exceed the weighted sum by ``margin`` (see
        :func:`~snn_encodings.conversion.exactness.layer_bound`). Default ``None``.
        """
        return None

    def calibration_percentile(self) -> float | None:
        """Default percentile for the activation scales, ``None`` for the maximum."""
        return None

    def quantise_synapse(self, synapse: nn.Module) -> None:
        """Round a built synapse's normalised parameters to the encoding's grid, in place.

        ``synapse`` is a :class:`~snn_encodings.conversion.synapse.Synapse`: its ``ops`` hold the
        weights (scales folded in), ``gains(i)`` the branch gains and ``bias`` the bias map,
        which an override rounds with :meth:`quantise_bias` (the scale search rounds its
        candidates' bias maps with it alone, :meth:`layer_bias`). Default: unchanged.
        """

    def quantise_bias(self, bias: Tensor) -> Tensor:
        """A normalised bias map (threshold units) on the encoding's grid. Default: unchanged."""
        return bias

    def layer_bias(
        self, bias: Tensor, *, hidden: bool, levels: int | None = None, shift: float = 0.0
    ) -> Tensor:
        """The bias map :meth:`quantise_layer` leaves in a synapse whose normalised bias is
        ``bias`` (in the rule's dtype), without building one: the hidden layers' shift, then
        :meth:`quantise_bias`."""
        if hidden:
            bias = bias + self.hidden_bias_shift(levels, shift)
        return self.quantise_bias(bias)

    # --- spiking network ------------------------------------------------------------------
    def encode_input(self, x: Tensor) -> Tensor:
        """Network input ``(B, *)`` -> first-layer spikes or currents ``(T, B, *)``."""
        raise NotImplementedError

    def decode_input(self, x: Tensor) -> Tensor:
        """The input value the encoded train represents (what the twin sees), ``(B, *)``."""
        return x

    def bias_currents(self, bias: Tensor, steps: int) -> Tensor:
        """Bias map ``(*)`` in threshold units -> its currents over the window ``(T, *)``."""
        raise NotImplementedError

    def neuron_layer(self, output: bool) -> nn.Module:
        """A module mapping currents ``(T, B, *)`` to spikes ``(T, B, *)`` in the window.

        After a forward call it must expose ``last_state`` (the encoding's final state) so that
        :meth:`decode_output` can read membranes. ``output=True`` builds the non-rectified
        output layer.
        """
        raise NotImplementedError

    def decode_output(self, spikes: Tensor, layer: nn.Module) -> Tensor:
        """Output spikes ``(T, B, *)`` (and the layer's final state) -> values ``(B, *)``."""
        raise NotImplementedError

    def max_pool(self, spikes: Tensor, pool: nn.Module) -> Tensor:
        """Apply max-pooling ``pool`` to spike trains ``(T, B, C, *)`` under this encoding."""
        raise ConversionError(f"{type(self.spec).__name__} does not support max-pooling")

    def steps_per_call(self, batch: int, widest: int) -> int | None:
        """Time steps a dense synapse takes per call (``Synapse.drive``'s ``steps_per_call``)
        for ``batch`` samples in a network whose widest layer has ``widest`` neurons per
        sample: a rule that evaluates its window in blocks of time steps drives the whole
        window in calls of the same size, so both round alike. Default ``None``: one call."""
        return None

    def fast_forward(self, network: nn.Module, x: Tensor) -> FastPass | None:
        """A loop-free forward pass of ``network`` on checked inputs ``x``, or ``None``.

        When it returns a :class:`FastPass`, ``SpikingNetwork.forward`` uses it instead of
        simulating the window: its output and spike counts must equal the simulation's.
        Default ``None`` (simulate).
        """
        return None

    def finalize(self, network: nn.Module, calibration: Any) -> None:
        """Last step of ``convert`` (e.g. measuring initial membranes on data); default none."""


class FastPass(NamedTuple):
    """Result of :meth:`Rule.fast_forward`.

    Attributes:
        output: decoded outputs ``(B, *)`` before the output scale, as :meth:`Rule.decode_output`
            gives them.
        spikes: per value node (input first, then one per stage) the spike count of every
            neuron over the window, ``(B, *)`` (bool where a neuron spikes at most once); may
            be empty while the network is not counting (``SpikingNetwork.counting``).
    """

    output: Tensor
    spikes: list[Tensor]


def constant_like(like: Tensor, fill: bool | int, dtype: torch.dtype) -> Tensor:
    """``fill`` in the shape of ``like`` as an expanded scalar: a read-only tensor without
    memory per element, for the constant fields the closed forms report (states, masks)."""
    return torch.full((), fill, dtype=dtype, device=like.device).expand(like.shape)


def register_rule(spec_type: type[Spec], rule: type[Rule]) -> None:
    """Make ``rule`` the conversion hooks of ``spec_type`` in its encoding record.

    Raises:
        TypeError: if ``spec_type`` has no registered encoding record.
    """
    register_encoding(replace(encoding_for(spec_type), rule=rule))


def rule_for(spec: Spec) -> Rule:
    """Return the conversion hooks for ``spec``, as its encoding record names them.

    Raises:
        TypeError: if ``spec`` is not an instance of a registered spec class.
    """
    return encoding_for(spec).load("rule")(spec)
