"""snnTorch neurons for every encoding, input helpers next to ``snntorch.spikegen``, conversion.

Swap the neuron class in existing snnTorch code::

    lif = snntorch.Leaky(beta=0.9)          ->  lif = ICRateNeuron()      # or Neuron(spec)
    spk, mem = lif(cur, mem)                    # same calling forms, same return values

Each neuron subclasses :class:`snntorch.Leaky` so snnTorch's tooling (``snntorch.utils.reset``,
``init_hidden``/``output`` inside ``nn.Sequential``, surrogate gradients) keeps working, but its
forward pass only runs the encoding's core functions
(:func:`~snn_encodings.functional.neuron_functions`): the maths is documented there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

try:
    import snntorch
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'snn_encodings.adapters.snntorch needs snnTorch: pip install "snn-encodings[snntorch]"'
    ) from error

from snn_encodings import coding
from snn_encodings.conversion import SpikingNetwork, with_steps
from snn_encodings.conversion import convert as core_convert
from snn_encodings.conversion.convert import AUTO
from snn_encodings.encoding import encoding_for
from snn_encodings.errors import ExportError, SpecError
from snn_encodings.functional import neuron_functions, simulate
from snn_encodings.specs import ICRate, Quartz, Radix, Spec

from ._swap import (
    NOT_RATE_TRAINABLE,
    class_scores,
    decoded,
    refuse,
    scaled,
    spec_or_default,
    spec_with_threshold,
    warn_rate_loss,
    warn_short_window,
)

__all__ = [
    "NEURONS",
    "NOT_RATE_TRAINABLE",
    "RESETS",
    "ICRateNeuron",
    "Neuron",
    "QuartzNeuron",
    "RadixNeuron",
    "SnnTorchNetwork",
    "class_scores",
    "convert",
    "encode",
    "neuron_for",
    "rate_sigma_delta",
    "reset",
]

_NEURONS: dict[type[Spec], type[Neuron]] = {}
NEURONS: Mapping[type[Spec], type[nn.Module]] = MappingProxyType(_NEURONS)
"""Spec class -> its snnTorch neuron class (filled as the classes below are defined)."""


class Neuron(snntorch.Leaky):
    r"""snnTorch neuron of any registered encoding: an :class:`snntorch.Leaky` running a core step.

    ``Neuron(spec)`` runs ``neuron_functions(spec).step``; :class:`ICRateNeuron`,
    :class:`RadixNeuron` and :class:`QuartzNeuron` are the same class with a default spec
    (``ICRateNeuron()`` = ``Neuron(ICRate())``). The state is the encoding's state record
    (membrane ``v`` plus any counters or flags), exposed to snnTorch as ``mem`` = ``v``.

    The swap in snnTorch code keeps the keywords::

        snn.Leaky(beta=0.95, spike_grad=surrogate.atan(), init_hidden=True)
        ICRateNeuron(spike_grad=surrogate.atan(), init_hidden=True)       # beta omitted (or 1)

    Conventions translated from snnTorch:

    - **Calling forms.** ``spk, mem = neuron(cur, mem)`` (explicit style), ``spk = neuron(cur)``
      with ``init_hidden=True``, and ``spk, mem = neuron(cur)`` with ``init_hidden=True,
      output=True``, exactly as :class:`snntorch.Leaky`. ``cur`` is one step ``(B, *)``.
    - **Fresh state.** snnTorch marks a fresh neuron by a zero (or empty) membrane. Here the
      encoding's initial state replaces it: ``reset_mem()``/``init_leaky()``,
      ``snntorch.utils.reset(net)`` and :func:`reset` restore the initial membrane (e.g. IC-rate's
      :math:`v_0`, not zero) and every other state field. Passing or assigning an all-zero or
      empty ``mem`` likewise means "start fresh"; passing back the ``mem`` the neuron returned
      (or a view of it, e.g. ``mem.detach()``) continues the run; any other tensor replaces the
      membrane and keeps the other fields.
    - **Windows.** Radix and Quartz neurons need a whole window (``spec.steps_per_layer``
      steps) per run; a run found shorter when the neuron restarts warns once
      (:class:`~snn_encodings.errors.SnnEncodingsWarning`).
    - **Shapes.** After a reset the next input may have any shape. A different shape in the
      middle of a run raises :class:`~snn_encodings.errors.SpecError` (``snntorch.Leaky``
      silently restarts from zero instead).
    - **Gradients.** ``spike_grad`` (default ``snntorch.surrogate.atan()``) is passed to the core
      step as ``surrogate=``: the spikes stay exact (:math:`H(v - \theta)`, with :math:`\ge`),
      the surrogate provides the gradient (a NaN its derivative gives far from threshold, as
      ``snntorch.surrogate.sigmoid`` does in float32, counts as 0, its limit).
      ``surrogate_disable=True`` gives no spike gradient. Encodings listed in
      :data:`NOT_RATE_TRAINABLE` need a loss on what their spikes encode (:func:`class_scores`),
      not on spike counts: an ``output=True`` neuron of such an encoding warns once when a loss
      other than :func:`class_scores` sends gradient into its spikes.
      ``learn_threshold=True`` makes ``threshold`` an ``nn.Parameter`` passed to the step as
      ``threshold=`` (only for encodings whose step accepts that override).
    - **Readout.** ``snntorch.functional.accuracy_rate`` (argmax of spike counts) is right for
      IC-rate only; :func:`class_scores` decodes every encoding's output spikes.
    - **NIR.** ``snntorch.export_nir.export_to_nir`` would describe the neuron as a leaky
      integrate-and-fire node; reading ``beta`` (which it does) raises
      :class:`~snn_encodings.errors.ExportError` instead. Use ``snn_encodings.export``.

    Args:
        spec: the encoding's spec; ``None`` gives the class's default spec (per-encoding
            classes only). A number here is taken as snnTorch's positional ``beta``.
        beta: snnTorch's leak factor; these neurons integrate without leak, so only 1 works
            (radix's per-digit leak is ``Radix(leak=...)``).
        threshold: the firing threshold, written into the spec (``ICRate(threshold=...)``,
            radix's normalised threshold); Quartz accepts only its own ``t_max + 1/2``.
        spike_grad: snnTorch surrogate (``snntorch.surrogate.*``); ``None`` gives ``atan()``.
        surrogate_disable: no gradient through the spikes.
        init_hidden: keep the state inside the module and return spikes only.
        inhibition, learn_beta, state_quant, graded_spikes_factor,
            learn_graded_spikes_factor: snnTorch options without meaning here; only their
            defaults are accepted.
        learn_threshold: learn the threshold (initialised to the spec's).
        reset_mechanism: the encoding's own reset (:data:`RESETS`; ``None`` takes it); any
            other raises.
        output: with ``init_hidden``, also return the membrane.
        reset_delay: accepted either way: with an integrate-and-fire neuron a delayed reset
            gives the same spikes; the returned ``mem`` is always after the step's reset.
        v0: initial membrane handed to the core ``initial_state`` (a scalar, or a tensor
            broadcastable to one step's shape, e.g. per-channel values from calibration);
            ``None`` uses the spec's default.
        surrogate_gain: factor on the surrogate's gradient (spikes unchanged).

    Raises:
        TypeError: if ``spec`` is not an instance of ``spec_type`` (or missing for ``Neuron``).
        SpecError: for a keyword the encoding cannot honour, naming what to pass instead.
    """

    spec_type: ClassVar[type[Spec]] = Spec

    def __init_subclass__(cls, *, spec: type[Spec] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec is not None:
            cls.spec_type = spec
            _NEURONS[spec] = cls

    def __init__(
        self,
        spec: Spec | float | None = None,
        beta: float | Tensor = 1.0,
        threshold: float | None = None,
        spike_grad: Callable[[Tensor], Tensor] | None = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        inhibition: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str | None = None,
        state_quant: Any = False,
        output: bool = False,
        graded_spikes_factor: float = 1.0,
        learn_graded_spikes_factor: bool = False,
        reset_delay: bool = True,
        *,
        v0: float | Tensor | None = None,
        surrogate_gain: float = 1.0,
    ) -> None:
        name = type(self).__name__
        if isinstance(spec, (int, float, Tensor)) and not isinstance(spec, bool):
            spec, beta = None, spec  # snnTorch's positional beta: Leaky(0.9)
        spec = spec_or_default(spec, self.spec_type, name)
        _check_snntorch_keywords(
            name,
            spec,
            beta=beta,
            learn_beta=learn_beta,
            inhibition=inhibition,
            state_quant=state_quant,
            graded_spikes_factor=graded_spikes_factor,
            learn_graded_spikes_factor=learn_graded_spikes_factor,
            reset_mechanism=reset_mechanism,
        )
        spec = spec_with_threshold(spec, threshold, name, "threshold")
        functions = neuron_functions(spec)
        if learn_threshold and "threshold" not in inspect.signature(functions.step).parameters:
            raise SpecError(
                f"{name}: learn_threshold=True needs a threshold override, which "
                f"{functions.step.__name__} does not accept; leave learn_threshold=False"
            )
        super().__init__(
            beta=1.0,
            threshold=float(getattr(spec, "threshold", None) or 1.0),
            spike_grad=spike_grad,
            surrogate_disable=surrogate_disable,
            init_hidden=init_hidden,
            learn_threshold=learn_threshold,
            output=output,
            reset_delay=False,
        )
        self.spec = spec
        self.surrogate_gain = float(surrogate_gain)
        self._functions = functions
        self._learn_threshold = learn_threshold
        self._steps = 0
        if isinstance(v0, Tensor):
            self.register_buffer("v0", v0.detach().clone())
        else:
            self.v0 = v0

    # --- state storage: the core state record, seen by snnTorch as ``mem`` -------------------
    def _init_mem(self) -> None:
        # Called by snntorch.Leaky.__init__ instead of registering the ``mem`` buffer.
        self._state: Any = None
        self._fresh = True

    def _lif_register_buffer(self, beta: Any, learn_beta: Any) -> None:
        # No leak factor: ``beta`` is the property below, which blocks NIR export.
        return None

    @property
    def beta(self) -> Tensor:
        raise ExportError(
            f"{type(self).__name__} has no leak factor beta: it is the "
            f"{type(self.spec).__name__} encoding's neuron, not a leaky integrate-and-fire "
            f"neuron, so snnTorch's NIR export cannot describe it; export the converted "
            f"network with snn_encodings.export instead"
        )

    @property
    def state(self) -> Any:
        """The core state record after the last step (``None`` before the first step)."""
        return self._state

    @property
    def mem(self) -> Tensor:
        """The membrane ``v`` (the state's first field); empty before the first step."""
        if self._state is None:
            return torch.zeros(0, device=self.threshold.device)
        return self._state.v

    @mem.setter
    def mem(self, value: Tensor) -> None:
        self._take_membrane(value)

    def _initial_state(self, like: Tensor) -> Any:
        if self.v0 is None:
            return self._functions.initial_state(self.spec, like)
        return self._functions.initial_state(self.spec, like, v0=self.v0)

    def _take_membrane(self, value: Tensor) -> None:
        state = self._state
        if state is not None and value is state.v:
            return
        if (
            state is not None
            and value.shape == state.v.shape
            and value.numel() > 0
            and value.data_ptr() == state.v.data_ptr()
        ):
            # the returned membrane seen through a view, e.g. ``mem.detach()``: continue
            self._state = state._replace(v=value)
        elif value.numel() == 0 or not bool(value.any()):
            # a new all-zero tensor (snnTorch's reset_hidden assigns zeros_like(mem)): start
            # fresh, even when the current membrane happens to be zero
            self._state = None if value.numel() == 0 else self._initial_state(value.detach())
            self._fresh = True
        elif state is not None and value.shape == state.v.shape and torch.equal(value, state.v):
            self._state = state._replace(v=value)
        else:
            if state is None or state.v.shape != value.shape:
                state = self._initial_state(value.detach())
            self._state = state._replace(v=value)
            self._fresh = False

    def reset_mem(self) -> Tensor:
        """Restore the encoding's initial state (keeping the last shape) and return its ``v``."""
        if self._state is not None:
            self._state = self._initial_state(self._state.v.detach())
        self._fresh = True
        return self.mem

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Neuron:
        super()._apply(fn, recurse)
        if self._state is not None:
            self._state = type(self._state)(*(fn(field) for field in self._state))
        return self

    # --- one time step ----------------------------------------------------------------------
    def forward(self, input_: Tensor, mem: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Advance one step with the core step function.

        Args:
            input_: input current at this step, ``(B, *)``, in threshold units.
            mem: the membrane returned by the previous call (explicit style); not allowed
                with ``init_hidden=True``.
        Returns:
            ``spk`` with ``init_hidden=True`` and ``output=False``, else ``(spk, mem)``; both
            shaped and typed like ``input_``; spikes are exactly 0 or 1.
        Raises:
            TypeError: if ``mem`` is passed while ``init_hidden=True``.
            SpecError: if the input shape changed since the last step without a reset.
        """
        if self.init_hidden and mem is not None:
            raise TypeError(
                f"{type(self).__name__}: `mem` should not be passed as an argument while "
                f"`init_hidden=True`"
            )
        if mem is not None:
            self._take_membrane(mem)
        if self._fresh:
            if self._steps:
                warn_short_window(type(self).__name__, self.spec, self._steps)
            self._steps = 0
            self._state = self._initial_state(input_.detach())
        elif self._state is None or self._state.v.shape != input_.shape:
            before = None if self._state is None else tuple(self._state.v.shape)
            raise SpecError(
                f"{type(self).__name__}: input has shape {tuple(input_.shape)} but the neuron's "
                f"state has {before}; call reset_mem(), snntorch.utils.reset(net) or "
                f"snn_encodings.adapters.snntorch.reset(net) before a batch of another shape"
            )
        overrides = {"threshold": self.threshold} if self._learn_threshold else {}
        surrogate = None if self.surrogate_disable else scaled(self.spike_grad, self.surrogate_gain)
        spk, self._state = self._functions.step(
            input_, self._state, self.spec, surrogate=surrogate, **overrides
        )
        self._fresh = False
        self._steps += 1
        if self.output and spk.requires_grad and type(self.spec) in NOT_RATE_TRAINABLE:
            spk.register_hook(self._check_loss)
        if self.output or not self.init_hidden:
            return spk, self._state.v
        return spk

    def _check_loss(self, grad: Tensor) -> None:
        # Runs when a loss sends gradient into this output neuron's spikes.
        if not decoded(self.spec):
            warn_rate_loss(type(self).__name__, self.spec)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, init_hidden={self.init_hidden}, output={self.output}"


RESETS: Mapping[type[Spec], str] = MappingProxyType(
    {ICRate: "subtract", Radix: "subtract", Quartz: "zero"}
)
"""Spec class -> its neuron's reset, in snnTorch's ``reset_mechanism`` words (Quartz neurons
zero their membrane when they fire, and fire once per window)."""


def _check_snntorch_keywords(where: str, spec: Spec, **given: Any) -> None:
    """Refuse snnTorch keywords that the encoding's neuron cannot honour (see :class:`Neuron`)."""
    beta = given["beta"]
    if not bool(torch.all(torch.as_tensor(beta, dtype=torch.float64) == 1.0)):
        why = f"{type(spec).__name__} neurons integrate without leak"
        if isinstance(spec, Radix):
            why += " (the per-digit leak is Radix(leak=...))"
        raise refuse(where, "beta", beta, why, "omit beta (or pass beta=1.0)")
    fixed = {
        "learn_beta": (False, "there is no leak factor to learn"),
        "inhibition": (False, "winner-take-all would change the encoding's spike trains"),
        "state_quant": (False, "the encoding fixes its own membrane arithmetic"),
        "graded_spikes_factor": (1.0, "spikes are exactly 0 or 1 (the decoders assume it)"),
        "learn_graded_spikes_factor": (False, "spikes are exactly 0 or 1"),
    }
    for keyword, (default, why) in fixed.items():
        if given[keyword] is not default and given[keyword] != default:
            raise refuse(where, keyword, given[keyword], why, f"omit {keyword}")
    reset = given["reset_mechanism"]
    own = RESETS.get(type(spec))
    if reset is not None and reset != own:
        why = f"the {type(spec).__name__} neuron's reset is its own ({own!r})"
        instead = f"omit reset_mechanism (or pass {own!r})"
        raise refuse(where, "reset_mechanism", reset, why, instead)


class ICRateNeuron(Neuron, spec=ICRate):
    """:class:`Neuron` of the IC-rate encoding (default spec ``ICRate()``); runs
    :func:`~snn_encodings.functional.icrate_step`.

    Example:
        >>> neuron = ICRateNeuron(ICRate(steps=4))          # v0 = threshold / 2
        >>> spk, mem = neuron(torch.tensor([0.75]))
        >>> spk.tolist(), mem.tolist()
        ([1.0], [0.25])
        >>> neuron.reset_mem().tolist()                      # back to v0, not 0
        [0.5]
    """


class RadixNeuron(Neuron, spec=Radix):
    """:class:`Neuron` of the radix encoding (default spec ``Radix()``); runs
    :func:`~snn_encodings.functional.radix_step`."""


class QuartzNeuron(Neuron, spec=Quartz):
    """:class:`Neuron` of the Quartz encoding (default spec ``Quartz()``); runs
    :func:`~snn_encodings.functional.quartz_step`."""


def neuron_for(spec: Spec, **options: Any) -> Neuron:
    """Build the snnTorch neuron of ``spec`` (``options`` as in :class:`Neuron`).

    Raises:
        TypeError: if no neuron class is registered for ``type(spec)``.
    """
    try:
        cls = _NEURONS[type(spec)]
    except KeyError:
        known = ", ".join(sorted(t.__name__ for t in _NEURONS))
        raise TypeError(
            f"no snnTorch neuron for {type(spec).__name__}; supported specs: {known}"
        ) from None
    return cls(spec, **options)


def reset(net: nn.Module) -> nn.Module:
    """Reset every spiking neuron inside ``net`` (at any depth), and nothing outside it.

    Our neurons return to their encoding's initial state; other ``snntorch`` neurons get their
    own ``reset_mem()``. Unlike ``snntorch.utils.reset``, neurons nested in sub-modules are
    reached and neurons of other networks are left alone.

    Returns:
        ``net``, for chaining.
    """
    for module in net.modules():
        if isinstance(module, snntorch.Leaky):
            module.reset_mem()
    return net


# --- conversion ---------------------------------------------------------------------------------
class SnnTorchNetwork(nn.Module):
    """A converted network called the snnTorch way: ``spk_rec, mem_rec = net(data)``.

    It runs the core :class:`~snn_encodings.SpikingNetwork` unchanged (same encoder, synapses,
    neuron layers and decoder), so its outputs and predictions are the core network's, and
    records the output layer time-first, as snnTorch models do.

    Attributes:
        network: the core network.
        output: the decoded outputs ``(B, K)`` of the last call (the ANN's logit units); its
            ``argmax(1)`` is the prediction (see :meth:`predict`). The output spike count
            (what ``snntorch.functional.accuracy_rate`` ranks) is not the readout: radix spikes
            are digits and a Quartz neuron spikes once, at a time that encodes its value.
    """

    def __init__(self, network: SpikingNetwork) -> None:
        super().__init__()
        if not isinstance(network, SpikingNetwork):
            raise TypeError(
                f"SnnTorchNetwork expects a SpikingNetwork from snn_encodings.convert, "
                f"got {type(network).__name__}"
            )
        self.network = network
        network.use_fast_path = False  # the output layer's spike trains are recorded below
        self.output: Tensor | None = None

    @property
    def spec(self) -> Spec:
        """The encoding's spec."""
        return self.network.spec

    @property
    def num_steps(self) -> int:
        """Time steps of one layer's window (the length of ``spk_rec``)."""
        return self.network.spec.steps_per_layer

    def forward(self, data: Tensor) -> tuple[Tensor, Tensor | None]:
        """Simulate inputs ``data`` ``(B, *)``, as the ANN takes them (they are encoded here).

        Returns:
            ``(spk_rec, mem_rec)``: the output layer's spikes ``(num_steps, B, K)`` and its
            membrane after every step, replayed with the core step function from the layer's
            initial membrane. ``mem_rec`` is ``None`` for an encoding whose output layer does
            more than run its neurons (e.g. re-aligns spikes in time); ``spk_rec`` and
            :attr:`output` are always the core network's.
        Raises:
            ConversionError: for inputs that do not fit the network.
        """
        layer = cast(
            nn.Module,
            next(
                stage.neurons for stage in reversed(self.network.stages) if stage.kind == "output"
            ),
        )
        captured: list[tuple[Tensor, Tensor]] = []
        handle = layer.register_forward_hook(
            lambda module, args, spikes: captured.append((args[0], spikes))
        )
        try:
            self.output = self.network(data)
        finally:
            handle.remove()
        currents, spk_rec = captured[-1]
        return spk_rec, self._membranes(layer, currents, spk_rec)

    def _membranes(self, layer: nn.Module, currents: Tensor, spikes: Tensor) -> Tensor | None:
        initial_v = getattr(layer, "initial_v", None)
        v0 = initial_v(currents[0]) if callable(initial_v) else None
        replay = simulate(self.network.spec, currents, record=True, v0=v0)
        if not torch.equal(replay.spikes, spikes):
            return None
        return replay.states[0]

    @torch.no_grad()
    def predict(self, data: Tensor) -> Tensor:
        """Class predictions ``(B,)``: the argmax of the decoded outputs."""
        return self.network(data).argmax(1)


def convert(
    ann: nn.Module,
    spec: Spec,
    calibration: Any,
    *,
    num_steps: int | None = None,
    percentile: float | None | str = AUTO,
    per_channel: bool | str = AUTO,
    device: str | torch.device | None = None,
) -> SnnTorchNetwork:
    """Convert a trained ANN with :func:`snn_encodings.convert` and wrap it snnTorch-style.

    Args:
        ann: the trained model (not modified).
        spec: the encoding, e.g. ``ICRate(steps=16)``.
        calibration: an iterable of input batches or ``(input, target)`` pairs.
        num_steps: time steps per inference, replacing ``spec.steps`` (for specs with a
            ``steps`` field); ``None`` keeps the spec's.
        percentile, per_channel, device: as for :func:`snn_encodings.convert`.
    Returns:
        A :class:`SnnTorchNetwork` in eval mode.
    Raises:
        ConversionError: as :func:`snn_encodings.convert`, or for ``num_steps`` with a spec
            that has no ``steps`` field.
        TypeError: if ``spec`` is not a neuron spec.
    """
    network = core_convert(
        ann, spec, calibration, percentile=percentile, per_channel=per_channel, device=device
    )
    if num_steps is not None:
        network = with_steps(network, num_steps)
    return SnnTorchNetwork(network).eval()


# --- input helpers, time-first like snntorch.spikegen ------------------------------------------
def encode(data: Tensor, spec: Spec) -> Tensor:
    """Encode network inputs for the first layer with ``spec``'s core encoder.

    Args:
        data: inputs ``(B, *)``.
        spec: the encoding's spec; its encoder is the one its encoding record names.
    Returns:
        Time-first ``(T, B, *)`` spikes or currents, ``T = spec.steps_per_layer``.
    Raises:
        TypeError: if ``spec`` is not a spec of a registered encoding.
    """
    return encoding_for(spec).load("encode")(data, spec)


def rate_sigma_delta(data: Tensor, num_steps: int, *, offset: float = 0.5) -> Tensor:
    """Deterministic rate code (sigma-delta), a drop-in for ``snntorch.spikegen.rate``.

    Runs :func:`snn_encodings.coding.sigma_delta`: the spike count of a value ``x`` in [0, 1]
    over ``num_steps`` steps is ``floor(num_steps * x + offset)``, with no randomness.

    Returns:
        Spikes ``(num_steps, *data.shape)``.
    Raises:
        SpecError: for values outside [0, 1] or a bad ``num_steps``/``offset``.
    Example:
        >>> rate_sigma_delta(torch.tensor([0.5]), num_steps=4).flatten().tolist()
        [1.0, 0.0, 1.0, 0.0]
    """
    return coding.sigma_delta(data, num_steps, offset=offset)
