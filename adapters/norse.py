r"""Norse adapter: every encoding as a Norse cell (one step) and layer (time-first sequence).

The modules follow Norse 1.1's conventions. They subclass ``norse.torch.module.snn.SNNCell`` and
``SNN``, take ``forward(input_tensor, state=None) -> (output, state)``, keep no hidden state
(``state=None`` means the encoding's initial state) and work in ``norse.torch.SequentialState``
and under ``norse.torch.Lift``. The bases run the core step function of the spec
(:func:`snn_encodings.functional.neuron_functions`); the maths is documented there.

- :class:`Cell` (one step, the swap for ``LIFCell``) and :class:`Neurons` (a time-first
  sequence, the swap for ``LIF``) accept any registered spec; ``ICRateCell``/``ICRateNeurons``
  (and one pair per encoding, see :data:`NEURONS`) accept only their own spec class and
  default to it (``ICRateCell()``).
- :func:`class_scores` decodes output spikes into class scores for every encoding.
- :func:`convert` turns a trained ANN into a Norse model through the core converter.
- :func:`to_nir` refuses networks holding our neurons, naming why NIR cannot express them
  (see :data:`NIR_LIMITS`), and hands other networks to ``norse.torch.to_nir``.

Example:
    >>> import torch
    >>> from snn_encodings import ICRate
    >>> layer = ICRateNeurons(ICRate(steps=4, init="zero"))
    >>> spikes, state = layer(torch.full((4, 1, 2), 0.5))
    >>> spikes[:, 0, 0].tolist(), state.v[0].tolist()
    ([0.0, 1.0, 0.0, 1.0], [0.0, 0.0])
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, cast

import torch
from torch import Tensor, nn

import snn_encodings
from snn_encodings.conversion import Rule, SpikingNetwork
from snn_encodings.conversion.rules.base import NeuronLayer
from snn_encodings.conversion.synapse import Synapse
from snn_encodings.conversion.trains import currents
from snn_encodings.encoding import encoding_for, encoding_notes
from snn_encodings.errors import ConversionError, ExportError, SpecError
from snn_encodings.functional import neuron_functions
from snn_encodings.functional.channels import channel_view
from snn_encodings.functional.surrogate import Surrogate
from snn_encodings.specs import ICRate, Quartz, Radix, Spec

from ._swap import (
    RateLossWatch,
    class_scores,
    refuse,
    scaled,
    spec_or_default,
    warn_short_window,
)

try:
    from norse.torch import SequentialState
    from norse.torch import to_nir as _norse_to_nir
    from norse.torch.functional.threshold import threshold as _norse_threshold
    from norse.torch.module.snn import SNN, SNNCell
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'snn_encodings.adapters.norse needs Norse: pip install "snn-encodings[norse]"'
    ) from error

__all__ = [
    "NEURONS",
    "NIR_LIMITS",
    "Cell",
    "EncodingParameters",
    "ICRateCell",
    "ICRateNeurons",
    "Neurons",
    "QuartzCell",
    "QuartzNeurons",
    "RadixCell",
    "RadixNeurons",
    "SURROGATE_GAIN",
    "class_scores",
    "convert",
    "from_spiking_network",
    "to_nir",
]

SURROGATE_GAIN = 0.25
r"""Default factor on the surrogate gradient. On Norse's ``LIFConvNet`` at 32 steps, with the
swap ``LIFCell(p=LIFParameters(v_th=v))`` -> ``ICRateCell(ICRate(steps=32, threshold=5 * v))``,
the full surrogate gave weight gradients 13-106x ``LIFCell``'s (larger the more cells they
cross: the LIF takes in only ``dt * tau_mem_inv`` of its filtered current per step); a quarter
puts every layer within 10x (``tests/adapters/test_norse_tutorial.py``). Adam normalises the
factor away; it matters under plain SGD and for gradient clipping."""


class EncodingParameters(NamedTuple):
    """Norse-style parameters of an encoding's neurons (the ``p`` of a cell or layer).

    Attributes:
        spec: the encoding's spec (frozen; all of the neuron's maths follows from it).
        v0: initial membrane override (threshold units), a tensor broadcastable to ``(B, *)``,
            or ``None`` for the spec's own initial state.
        threshold: threshold override for steps that accept one, or ``None`` for the spec's.
        method: Norse surrogate name for ``norse.torch.functional.threshold.threshold``
            (``"super"``, ``"triangle"``, ...), or ``None`` for no surrogate gradient.
        alpha: the surrogate's sharpness, as in Norse's ``LIFParameters.alpha``.
        step_options: further keyword overrides of the core step, e.g. ``{"rectify": False}``
            for a Quartz output layer.
        gain: factor on the surrogate's gradient (default :data:`SURROGATE_GAIN`).
    """

    spec: Spec
    v0: Tensor | None = None
    threshold: Tensor | None = None
    method: str | None = "super"
    alpha: float = 100.0
    step_options: Mapping[str, Any] = MappingProxyType({})
    gain: float = SURROGATE_GAIN

    @property
    def surrogate(self) -> Surrogate | None:
        """The core ``surrogate=`` built from Norse's ``threshold(x, method, alpha)``, its
        gradient multiplied by ``gain``."""
        if self.method is None:
            return None
        method, alpha = self.method, self.alpha
        return scaled(lambda x: _norse_threshold(x, method, alpha), self.gain)

    def overrides(self, like: Tensor) -> dict[str, Tensor]:
        """Keyword overrides for the core step (``threshold`` cast to ``like``'s dtype)."""
        if self.threshold is None:
            return dict(self.step_options)
        return {**self.step_options, "threshold": self.threshold.to(like.dtype)}


def _norse_step(current: Tensor, state: Any, p: EncodingParameters, dt: float) -> Any:
    """Norse activation ``(input, state, p, dt)`` running the core step (steps count time, so
    Norse's ``dt`` is not used)."""
    return neuron_functions(p.spec).step(
        current, state, p.spec, surrogate=p.surrogate, **p.overrides(current)
    )


class _EncodingModule:
    """What cells and layers share: parameter registration, initial state and input checks."""

    spec_type: ClassVar[type[Spec] | None] = None
    _time_first: ClassVar[bool] = False
    spec: Spec
    v0: Tensor | None
    threshold: Tensor | None
    method: str | None
    alpha: float
    step_options: Mapping[str, Any]
    gain: float

    def _parameters(
        self, spec: Spec | None, p: Any, dt: float, **options: Any
    ) -> EncodingParameters:
        """The module's ``p``: the ``p=`` given (Norse style), else one built from ``options``."""
        name = type(self).__name__
        if not isinstance(dt, (int, float)) or isinstance(dt, bool) or dt <= 0:
            raise SpecError(f"{name}: dt must be a positive number, got {dt!r}")
        if p is None:
            return self._make_parameters(spec_or_default(spec, self.spec_type, name), **options)
        if not isinstance(p, EncodingParameters):
            why = (
                "Norse's neuron parameters (time constants, v_leak, v_reset) have no meaning for "
                "an encoding's neuron"
            )
            instead = "pass the spec (and threshold=, method=, alpha=) or an EncodingParameters"
            raise refuse(name, "p", type(p).__name__, why, instead)
        if spec is not None and spec != p.spec:
            raise TypeError(f"{name}: spec={spec!r} and p.spec={p.spec!r} differ; pass one")
        spec_or_default(p.spec, self.spec_type, name)
        return p

    def _make_parameters(
        self,
        spec: Spec,
        *,
        v0: float | Tensor | None,
        threshold: float | Tensor | None,
        learn_v0: bool,
        learn_threshold: bool,
        method: str | None,
        alpha: float,
        step_options: Mapping[str, Any] | None,
        surrogate_gain: float,
    ) -> EncodingParameters:
        name = type(self).__name__
        functions = neuron_functions(spec)  # TypeError for an unregistered spec
        if (threshold is not None or learn_threshold) and "threshold" not in inspect.signature(
            functions.step
        ).parameters:
            raise TypeError(f"{name}: the {type(spec).__name__} step has no threshold override")
        options = dict(step_options or {})
        accepted = inspect.signature(functions.step).parameters
        unknown = sorted(
            key
            for key in options
            if key not in accepted or key in ("surrogate", "threshold") or key.startswith("_")
        )
        if unknown:
            raise TypeError(
                f"{name}: step_options {unknown} are not keyword overrides of "
                f"{functions.step.__name__}; pass threshold= and method= as arguments"
            )
        if method is not None:
            try:
                _norse_threshold(torch.zeros(1), method, alpha)
            except ValueError as error:
                raise SpecError(
                    f"{name}: method={method!r} is not a Norse threshold: {error}"
                ) from None
        if learn_v0 and v0 is None:
            v0 = functions.initial_state(spec, torch.zeros(()))[0]
        if learn_threshold and threshold is None:
            threshold = spec.threshold  # type: ignore[attr-defined]
        return EncodingParameters(
            spec,
            _as_tensor(v0, learn_v0),
            _as_tensor(threshold, learn_threshold),
            method,
            float(alpha),
            MappingProxyType(options),
            float(surrogate_gain),
        )

    # Norse's bases keep ``p`` as a plain attribute, which ``.to()`` and ``state_dict`` miss.
    # Here ``p`` is rebuilt on every access from tensors registered on the module.
    @property
    def p(self) -> EncodingParameters:
        return EncodingParameters(
            self.spec,
            self.v0,
            self.threshold,
            self.method,
            self.alpha,
            self.step_options,
            self.gain,
        )

    @p.setter
    def p(self, value: EncodingParameters) -> None:
        if not isinstance(value, EncodingParameters):
            raise TypeError(
                f"{type(self).__name__}.p must be EncodingParameters, got {type(value).__name__}"
            )
        module: nn.Module = self  # type: ignore[assignment]
        for field in ("v0", "threshold"):
            tensor = getattr(value, field)
            if field in module._parameters or field in module._buffers:
                delattr(module, field)
            if isinstance(tensor, nn.Parameter):
                module.register_parameter(field, tensor)
            else:
                module.register_buffer(field, tensor)
        self.spec = value.spec
        self.method = value.method
        self.alpha = value.alpha
        self.step_options = value.step_options
        self.gain = value.gain

    def extra_repr(self) -> str:
        learnable = [name for name, _ in self.named_parameters(recurse=False)]  # type: ignore[attr-defined]
        text = f"spec={self.spec!r}, method={self.method!r}, alpha={self.alpha}"
        if self.step_options:
            text += f", step_options={dict(self.step_options)}"
        return text + (f", learnable={learnable}" if learnable else "")

    def initial_state(self, input_tensor: Tensor) -> Any:
        """The encoding's initial state for ``input_tensor`` (``(B, *)`` for a cell, ``(T, B, *)``
        for a layer); used by Norse's bases when ``state`` is ``None``."""
        like = input_tensor[0] if self._time_first else input_tensor
        return neuron_functions(self.spec).initial_state(self.spec, like, v0=self.v0)

    def _check(self, input_tensor: Tensor, state: Any) -> None:
        name = type(self).__name__
        if not isinstance(input_tensor, Tensor):
            raise TypeError(f"{name}: input must be a tensor, got {type(input_tensor).__name__}")
        if self._time_first and (input_tensor.dim() < 2 or input_tensor.shape[0] == 0):
            raise SpecError(
                f"{name}: input must be time-first (T, B, *) with T >= 1, got shape "
                f"{tuple(input_tensor.shape)}; use {name.replace('Layer', 'Cell')} for one step"
            )
        if state is None:
            return
        expected = type(neuron_functions(self.spec).initial_state(self.spec, torch.zeros(())))
        if not isinstance(state, expected):
            raise TypeError(
                f"{name}: state must be a {expected.__name__} (or None to start fresh), "
                f"got {type(state).__name__}"
            )
        shape = tuple(input_tensor.shape[1:] if self._time_first else input_tensor.shape)
        for field, value in zip(state._fields, state):
            if tuple(value.shape) != shape:
                raise SpecError(
                    f"{name}: state.{field} has shape {tuple(value.shape)} but the input needs "
                    f"{shape}; pass state=None when the input shape changes (a state recorded "
                    f"with record_states=True is stacked over time)"
                )


def _as_tensor(value: float | Tensor | None, learnable: bool) -> Tensor | None:
    if value is None:
        return None
    if isinstance(value, Tensor) and value.is_floating_point():
        tensor = value.detach().clone()
    else:
        tensor = torch.as_tensor(value, dtype=torch.get_default_dtype())
    return nn.Parameter(tensor) if learnable else tensor


_ARGS_DOC = """
    Args:
        spec: the encoding's spec; any registered spec for the generic class, ``None`` for
            the per-encoding classes' default (``ICRateCell()`` runs ``ICRate()``).
        p: Norse style: an :class:`EncodingParameters` instead of ``spec`` and the options
            below. Norse's own parameter records (``LIFParameters`` ...) are refused: their
            time constants have no meaning for these neurons.
        dt: accepted as Norse's cells take it; the encodings count time in steps, so it does
            not change the dynamics.
        v0: initial membrane in threshold units (scalar or tensor broadcastable to ``(B, *)``,
            e.g. per channel ``(C, 1, 1)``); ``None`` uses the spec's initial state.
        threshold: threshold override (a tensor for per-neuron values), if the step has one.
        learn_v0: register ``v0`` as a trainable ``nn.Parameter`` (else a buffer).
        learn_threshold: register ``threshold`` as a trainable ``nn.Parameter``.
        method: Norse surrogate name (``threshold(x, method, alpha)``), ``None`` for none.
        alpha: the surrogate's sharpness.
        step_options: other keyword overrides of the core step, e.g. ``{"rectify": False}``
            for Quartz neurons without the rectifier.
        surrogate_gain: factor on the surrogate's gradient (spikes unchanged); the default
            :data:`SURROGATE_GAIN` keeps gradient norms at initialisation within 10x of
            Norse's ``LIFCell`` on its MNIST task network. Adam normalises any such factor
            away.
"""


class Cell(_EncodingModule, SNNCell):
    r"""One time step of an encoding's neurons, as a Norse cell (``SNNCell``).

    Runs the core step of ``spec`` (see :func:`snn_encodings.functional.neuron_functions`);
    spikes are exact :math:`\{0, 1\}`, Norse's surrogate only shapes the gradient. The swap
    of a Norse cell: ``LIFCell(p=LIFParameters(...))`` -> ``ICRateCell()`` (or
    ``Cell(spec)``), same ``z, s = cell(x, s)`` loop.
    {args}
    Inputs: ``input_tensor`` ``(B, *)`` currents in threshold units; ``state`` from a previous
    call or ``None``. Outputs: ``(spikes, state)``, spikes ``(B, *)`` in the input's dtype.

    Warnings (once each): a run, from one ``state=None`` call to the next, shorter than a radix
    or Quartz window (reported when the next run starts); a rate loss reaching radix or Quartz
    spikes (:class:`~snn_encodings.adapters._swap.RateLossWatch`).

    Raises:
        TypeError: for a spec of the wrong type, a state of another encoding, or an unknown
            step option.
        SpecError: for a state whose fields are not shaped like the input, or a Norse
            parameter record as ``p``.
    """

    def __init__(
        self,
        spec: Spec | None = None,
        *,
        p: EncodingParameters | None = None,
        dt: float = 0.001,
        v0: float | Tensor | None = None,
        threshold: float | Tensor | None = None,
        learn_v0: bool = False,
        learn_threshold: bool = False,
        method: str | None = "super",
        alpha: float = 100.0,
        step_options: Mapping[str, Any] | None = None,
        surrogate_gain: float = SURROGATE_GAIN,
    ) -> None:
        p = self._parameters(
            spec,
            p,
            dt,
            v0=v0,
            threshold=threshold,
            learn_v0=learn_v0,
            learn_threshold=learn_threshold,
            method=method,
            alpha=alpha,
            step_options=step_options,
            surrogate_gain=surrogate_gain,
        )
        super().__init__(activation=_norse_step, state_fallback=self.initial_state, p=p, dt=dt)
        self._run_steps = 0
        self._rate_watch = RateLossWatch()

    def forward(self, input_tensor: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        self._check(input_tensor, state)
        if state is None:
            if self._run_steps:
                warn_short_window(type(self).__name__, self.spec, self._run_steps)
            self._run_steps = 0
        self._run_steps += 1
        spikes, state = super().forward(input_tensor, state)
        self._rate_watch.step(spikes, type(self).__name__, self.spec)
        return spikes, state


class Neurons(_EncodingModule, SNN):
    r"""An encoding's neurons over a time-first sequence, as a Norse layer (``SNN``).

    Equivalent to looping the matching :class:`Cell` over dim 0; the swap of Norse's ``LIF()``.
    Arguments as for :class:`Cell`, plus ``record_states`` (as in Norse's ``LIF``): return the
    state after every step, each field stacked to ``(T, B, *)``, instead of the final state.
    A fresh run (``state=None``) shorter than a radix or Quartz window warns once, and so does
    a rate loss reaching radix or Quartz spikes.

    Inputs: ``input_tensor`` ``(T, B, *)``; ``state`` ``(B, *)`` fields or ``None``.
    Outputs: ``(spikes, state)``, spikes ``(T, B, *)``.
    """

    _time_first = True

    def __init__(
        self,
        spec: Spec | None = None,
        *,
        p: EncodingParameters | None = None,
        dt: float = 0.001,
        v0: float | Tensor | None = None,
        threshold: float | Tensor | None = None,
        learn_v0: bool = False,
        learn_threshold: bool = False,
        method: str | None = "super",
        alpha: float = 100.0,
        step_options: Mapping[str, Any] | None = None,
        surrogate_gain: float = SURROGATE_GAIN,
        record_states: bool = False,
    ) -> None:
        p = self._parameters(
            spec,
            p,
            dt,
            v0=v0,
            threshold=threshold,
            learn_v0=learn_v0,
            learn_threshold=learn_threshold,
            method=method,
            alpha=alpha,
            step_options=step_options,
            surrogate_gain=surrogate_gain,
        )
        super().__init__(
            activation=_norse_step,
            state_fallback=self.initial_state,
            p=p,
            dt=dt,
            record_states=record_states,
        )
        self._rate_watch = RateLossWatch()

    def forward(self, input_tensor: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        self._check(input_tensor, state)
        if state is None:
            warn_short_window(type(self).__name__, self.spec, input_tensor.shape[0])
        spikes, state = super().forward(input_tensor, state)
        self._rate_watch.sequence(spikes, type(self).__name__, self.spec)
        return spikes, state


Cell.__doc__ = (Cell.__doc__ or "").replace("{args}", _ARGS_DOC)


class ICRateCell(Cell):
    """IC-rate neurons, one step (default ``ICRate()``): ``icrate_step``."""

    spec_type = ICRate


class ICRateNeurons(Neurons):
    """IC-rate neurons over time (default ``ICRate()``): ``icrate_step`` looped."""

    spec_type = ICRate


class QuartzCell(Cell):
    """Quartz neurons, one step (default ``Quartz()``): ``quartz_step``.

    The state's step counter ``t`` places each step in the window (readout at :math:`2K`,
    rectifier at :math:`3K`), so a run starts at the window's first step with ``state=None``.
    """

    spec_type = Quartz


class QuartzNeurons(Neurons):
    """Quartz neurons over time (default ``Quartz()``): ``quartz_step`` looped.

    The raw spike times of the step loop; a converted network's layer also shifts them by
    ``spec.layer_latency`` (:func:`from_spiking_network` applies the core layer's hooks).
    """

    spec_type = Quartz


class RadixCell(Cell):
    """Radix neurons, one step (default ``Radix()``): ``radix_step``; ``spec.mode`` selects the
    exact or the paper neuron and the state's counter ``k`` places the step in the digit schedule.
    """

    spec_type = Radix


class RadixNeurons(Neurons):
    """Radix neurons over time (default ``Radix()``): ``radix_step`` looped.

    The raw step loop; a converted network's layer also pads, slices and saturates its window
    (:func:`from_spiking_network` applies the core layer's hooks).
    """

    spec_type = Radix


NEURONS: Mapping[type[Spec], tuple[type[Cell], type[Neurons]]] = {
    ICRate: (ICRateCell, ICRateNeurons),
    Quartz: (QuartzCell, QuartzNeurons),
    Radix: (RadixCell, RadixNeurons),
}
"""Spec class -> (cell class, sequence class)."""


# --- conversion ------------------------------------------------------------------------------
class _Encode(nn.Module):
    """Network input ``(B, *)`` -> first-layer input ``(T, B, *)`` (the encoding's encoder)."""

    def __init__(self, rule: Rule, dtype: torch.dtype) -> None:
        super().__init__()
        self.rule = rule
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.rule.encode_input(x.to(self.dtype))


class _Synapse(nn.Module):
    """Spikes ``(T, B, *)`` -> currents ``(T, B, *)``: a converted layer's weights and bias."""

    synapse: Synapse

    def __init__(self, synapse: Synapse, rule: Rule, widest: int) -> None:
        super().__init__()
        self.synapse = synapse
        self.rule = rule
        self.widest = widest

    def forward(self, spikes: Tensor) -> Tensor:
        per_call = self.rule.steps_per_call(spikes.shape[1], self.widest)
        source = self.synapse.sources[0]
        return currents(self.synapse, {source: spikes}, self.rule, spikes.shape[0], per_call)


class _MaxPool(nn.Module):
    """Max-pooling of spike trains ``(T, B, C, *)`` as the encoding defines it."""

    def __init__(self, pool: nn.Module, rule: Rule) -> None:
        super().__init__()
        self.pool = pool
        self.rule = rule

    def forward(self, spikes: Tensor) -> Tensor:
        return self.rule.max_pool(spikes, self.pool)


class _Window(nn.Module):
    """A converted neuron layer: a Norse :class:`Neurons` framed by the core layer's hooks.

    ``core`` is the converted network's
    :class:`~snn_encodings.conversion.rules.base.NeuronLayer`: its ``before`` prepares the
    window's currents (e.g. radix pads the window), ``layer`` steps the neurons, and its
    ``after`` re-aligns the spikes (e.g. Quartz shifts them by ``spec.layer_latency``) and
    records the final state. Inputs: currents ``(T, B, *)`` and the layer's state (or
    ``None``); outputs: ``(spikes (T, B, *), state)``.
    """

    def __init__(self, layer: Neurons, core: NeuronLayer) -> None:
        super().__init__()
        self.layer = layer
        self.core = core

    def forward(self, input_tensor: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        spikes, state = self.layer(self.core.before(input_tensor), state)
        return self.core.after(spikes, state), state


class _Readout(_Window):
    """The output layer: currents ``(T, B, K)`` -> ``(values (B, K), state)``, decoded by the
    encoding's rule from the core layer after its ``after`` hook, scaled back to the ANN's
    units and shifted back by the network's output offset (lifted negative logits)."""

    scale: Tensor
    offset: Tensor

    def __init__(
        self, layer: Neurons, core: NeuronLayer, rule: Rule, scale: Tensor, offset: Tensor
    ) -> None:
        super().__init__(layer, core)
        self.rule = rule
        self.register_buffer("scale", scale.clone())
        self.register_buffer("offset", offset.clone())

    def forward(self, input_tensor: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        spikes, state = super().forward(input_tensor, state)
        values = self.rule.decode_output(spikes, self.core)
        return values * channel_view(self.scale, values.dim() - 1) - self.offset, state


def _norse_layer(stage: Any, options: dict[str, Any]) -> tuple[Neurons, NeuronLayer]:
    core = stage.neurons
    if not isinstance(core, NeuronLayer):
        raise ConversionError(
            f"adapters.norse: layer {stage.name!r} ({type(core).__name__}) is not a NeuronLayer, "
            f"so its step loop cannot be run by a Norse layer; run the SpikingNetwork itself"
        )
    spec = core.step_spec
    layer_type = NEURONS.get(type(spec), (Cell, Neurons))[1]
    v0 = getattr(core, "v0", None)
    if isinstance(v0, Tensor) and v0.dim() == 1:
        v0 = channel_view(v0, len(stage.shape))
    layer = layer_type(spec, v0=v0, step_options=core.step_options, **options)
    return layer, core


def from_spiking_network(
    network: SpikingNetwork, *, method: str | None = "super", alpha: float = 100.0
) -> Any:
    """Turn a converted :class:`~snn_encodings.SpikingNetwork` into a Norse model.

    The model is a ``norse.torch.SequentialState`` over the whole time window: the encoder,
    then per layer its weights (copies of the network's synapse modules) and an
    :class:`Neurons` holding the layer's initial membrane, max-pooling stages, and a
    readout that decodes the output layer. ``model(x)`` with ``x`` ``(B, *)`` returns
    ``(outputs (B, K), states)``; the outputs equal ``network(x)``.

    Each Norse layer runs the core step of the converted layer's ``step_spec`` with its
    ``step_options`` (e.g. a Quartz output layer without the rectifier), between the core
    layer's ``before`` and ``after`` hooks (see
    :class:`~snn_encodings.conversion.rules.base.NeuronLayer`), so encodings whose layers pad
    or re-align their window (Quartz, radix) convert spike for spike too.

    Args:
        network: from :func:`snn_encodings.convert`.
        method, alpha: Norse surrogate for the layers (only gradients depend on it).
    Raises:
        ConversionError: if the network is not a chain (a layer adds several branches):
            Norse's ``SequentialState`` runs chains only; use ``network`` itself then. Also
            for a network with a float first layer.
    """
    if not isinstance(network, SpikingNetwork):
        raise TypeError(
            f"from_spiking_network: expected a SpikingNetwork, got {type(network).__name__}"
        )
    if network.float_first:
        raise ConversionError(
            "adapters.norse: a network with a float first layer (float_first_layer=True) runs "
            "its first layer outside the spiking simulation; run the SpikingNetwork itself"
        )
    network = copy.deepcopy(network)
    rule = network.rule
    scale = cast(Tensor, network.output_scale)
    stages = cast(list[Any], list(network.stages))
    options = {"method": method, "alpha": alpha}
    modules: list[nn.Module] = [_Encode(rule, scale.dtype)]
    for index, stage in enumerate(stages, start=1):
        sources = stage.inputs
        if sources != [index - 1]:
            raise ConversionError(
                f"adapters.norse: layer {stage.name!r} takes inputs from nodes {sources}, not "
                f"only the previous layer; Norse's SequentialState runs chains only, so run "
                f"the SpikingNetwork itself"
            )
        if stage.kind == "pool":
            modules.append(_MaxPool(stage.pool, rule))
            continue
        modules.append(_Synapse(stage.synapse, rule, network.widest))
        layer, core = _norse_layer(stage, options)
        if stage.kind == "output":
            offset = cast(Tensor, network.output_offset)
            modules.append(_Readout(layer, core, rule, scale, offset))
        else:
            modules.append(_Window(layer, core))
    return SequentialState(*modules).to(scale.device)


def convert(
    ann: nn.Module,
    spec: Spec,
    calibration: Iterable[Any],
    *,
    method: str | None = "super",
    alpha: float = 100.0,
    **options: Any,
) -> Any:
    """Convert a trained ANN for ``spec`` into a Norse model.

    Runs :func:`snn_encodings.convert` (all of its ``options``: ``percentile``,
    ``per_channel``, ``device``) and hands the result to :func:`from_spiking_network`; the
    Norse model gives the core network's outputs (tested).

    Returns:
        A ``norse.torch.SequentialState``: ``model(x)`` -> ``(outputs (B, K), states)``.
    Raises:
        ConversionError: as :func:`snn_encodings.convert` and :func:`from_spiking_network`.
        TypeError: if ``spec`` is not a neuron spec.
    """
    network = snn_encodings.convert(ann, spec, calibration, **options)
    model = from_spiking_network(network, method=method, alpha=alpha)
    return model


NIR_LIMITS: Mapping[type[Spec], str] = encoding_notes("nir_limit")
"""Spec class -> why NIR (1.0) cannot express the encoding's neuron faithfully (its record's
``nir_limit``)."""


def to_nir(module: nn.Module, sample_data: Tensor, **options: Any) -> Any:
    """Export ``module`` with ``norse.torch.to_nir``, refusing our neurons.

    Norse's exporter silently turns modules it does not know into empty nodes, which would
    export a network with our neurons as a broken graph; this function raises instead.

    Raises:
        ExportError: if ``module`` holds an :class:`Cell` or :class:`Neurons`,
            naming the layer and why NIR cannot express its neuron.
    """
    for name, child in module.named_modules():
        if isinstance(child, (Cell, Neurons)):
            reason = encoding_for(child.spec).nir_limit
            raise ExportError(
                f"to_nir: layer {name or '<root>'!r} ({type(child).__name__}) cannot be "
                f"exported to NIR: {reason}; export to Loihi with snn_encodings.export.netx "
                f"instead, or keep the model in Norse"
            )
    return _norse_to_nir(module, sample_data, **options)
