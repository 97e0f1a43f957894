"""snnTorch neurons for every encoding, input helpers next to ``snntorch.spikegen``, conversion.

Swap the neuron class in existing snnTorch code::

    lif = snntorch.Leaky(beta=0.9)          ->  lif = ICRateNeuron(ICRate(steps=8))
    spk, mem = lif(cur, mem)                    # same calling forms, same return values

Each neuron subclasses :class:`snntorch.Leaky` so snnTorch's tooling (``snntorch.utils.reset``,
``init_hidden``/``output`` inside ``nn.Sequential``, surrogate gradients) keeps working, but its
forward pass only runs the encoding's core functions (:func:`~snn_encodings.functional.neuron_functions`):
the maths is documented there.
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
from snn_encodings.errors import ExportError, SpecError
from snn_encodings.functional import neuron_functions, simulate
from snn_encodings.specs import ICRate, Quartz, Radix, Spec

__all__ = [
    "NEURONS",
    "NOT_RATE_TRAINABLE",
    "EncodingNeuron",
    "ICRateNeuron",
    "QuartzNeuron",
    "RadixNeuron",
    "SnnTorchNetwork",
    "convert",
    "encode",
    "neuron_for",
    "rate_sigma_delta",
    "reset",
]

_NEURONS: dict[type[Spec], type[EncodingNeuron]] = {}
NEURONS: Mapping[type[Spec], type[nn.Module]] = MappingProxyType(_NEURONS)
"""Spec class -> its snnTorch neuron class (filled as the classes below are defined)."""


class EncodingNeuron(snntorch.Leaky):
    r"""Base of the snnTorch neurons: an :class:`snntorch.Leaky` that runs a core step function.

    Subclasses only name their spec class (``class RadixNeuron(EncodingNeuron, spec=Radix)``).
    The forward pass calls ``neuron_functions(spec).step``; the state is the encoding's state
    record (membrane ``v`` plus any counters or flags), exposed to snnTorch as ``mem`` = ``v``.

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
    - **Shapes.** After a reset the next input may have any shape. A different shape in the
      middle of a run raises :class:`~snn_encodings.errors.SpecError` (``snntorch.Leaky``
      silently restarts from zero instead).
    - **Gradients.** ``spike_grad`` (default ``snntorch.surrogate.atan()``) is passed to the core
      step as ``surrogate=``: the spikes stay exact (:math:`H(v - \theta)`, with :math:`\ge`),
      the surrogate provides the gradient (a NaN its derivative gives far from threshold, as
      ``snntorch.surrogate.sigmoid`` does in float32, counts as 0, its limit).
      ``surrogate_disable=True`` gives no spike gradient. Encodings listed in
      :data:`NOT_RATE_TRAINABLE` need a loss on what their spikes encode, not on spike counts.
      ``learn_threshold=True`` makes ``threshold`` an ``nn.Parameter`` passed to the step as
      ``threshold=`` (only for encodings whose step accepts that override).
    - **Fixed.** The neuron does not leak (no ``beta``), and ``reset_mechanism``,
      ``inhibition``, ``state_quant``, graded spikes and ``reset_delay`` are not options: the
      reset is the encoding's own, applied in the same step.
    - **NIR.** ``snntorch.export_nir.export_to_nir`` would describe the neuron as a leaky
      integrate-and-fire node; reading ``beta`` (which it does) raises
      :class:`~snn_encodings.errors.ExportError` instead. Use ``snn_encodings.export``.

    Args:
        spec: the encoding's spec; must be an instance of the class's ``spec_type``.
        v0: initial membrane handed to the core ``initial_state`` (a scalar, or a tensor
            broadcastable to one step's shape, e.g. per-channel values from calibration);
            ``None`` uses the spec's default.
        spike_grad: snnTorch surrogate (``snntorch.surrogate.*``); ``None`` gives ``atan()``.
        surrogate_disable: no gradient through the spikes.
        init_hidden: keep the state inside the module and return spikes only.
        learn_threshold: learn the threshold (initialised to ``spec.threshold``).
        output: with ``init_hidden``, also return the membrane.

    Raises:
        TypeError: if ``spec`` is not an instance of ``spec_type``.
        SpecError: if ``learn_threshold`` is set for an encoding without a threshold override.
    """

    spec_type: ClassVar[type[Spec]] = Spec

    def __init_subclass__(cls, *, spec: type[Spec] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec is not None:
            cls.spec_type = spec
            _NEURONS[spec] = cls

    def __init__(
        self,
        spec: Spec,
        *,
        v0: float | Tensor | None = None,
        spike_grad: Callable[[Tensor], Tensor] | None = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        learn_threshold: bool = False,
        output: bool = False,
    ) -> None:
        name = type(self).__name__
        if not isinstance(spec, self.spec_type):
            raise TypeError(
                f"{name} expects a {self.spec_type.__name__} spec, got {type(spec).__name__}; "
                f"use neuron_for(spec) to pick the neuron class of a spec"
            )
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
        self._functions = functions
        self._learn_threshold = learn_threshold
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

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> EncodingNeuron:
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
            self._state = self._initial_state(input_.detach())
        elif self._state is None or self._state.v.shape != input_.shape:
            before = None if self._state is None else tuple(self._state.v.shape)
            raise SpecError(
                f"{type(self).__name__}: input has shape {tuple(input_.shape)} but the neuron's "
                f"state has {before}; call reset_mem(), snntorch.utils.reset(net) or "
                f"snn_encodings.adapters.snntorch.reset(net) before a batch of another shape"
            )
        overrides = {"threshold": self.threshold} if self._learn_threshold else {}
        surrogate = None if self.surrogate_disable else self.spike_grad
        spk, self._state = self._functions.step(
            input_, self._state, self.spec, surrogate=surrogate, **overrides
        )
        self._fresh = False
        if self.output or not self.init_hidden:
            return spk, self._state.v
        return spk

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, init_hidden={self.init_hidden}, output={self.output}"


class ICRateNeuron(EncodingNeuron, spec=ICRate):
    """snnTorch neuron of the IC-rate encoding; runs :func:`~snn_encodings.functional.icrate_step`.

    Example:
        >>> neuron = ICRateNeuron(ICRate(steps=4))          # v0 = threshold / 2
        >>> spk, mem = neuron(torch.tensor([0.75]))
        >>> spk.tolist(), mem.tolist()
        ([1.0], [0.25])
        >>> neuron.reset_mem().tolist()                      # back to v0, not 0
        [0.5]
    """


class RadixNeuron(EncodingNeuron, spec=Radix):
    """snnTorch neuron of the radix encoding; runs :func:`~snn_encodings.functional.radix_step`."""


class QuartzNeuron(EncodingNeuron, spec=Quartz):
    """snnTorch neuron of the Quartz encoding; runs :func:`~snn_encodings.functional.quartz_step`."""


NOT_RATE_TRAINABLE: Mapping[type[Spec], str] = MappingProxyType(
    {
        Quartz: (
            "a Quartz neuron fires exactly once per window (the rectifier fires every neuron "
            "still silent at step 3K), so its spike count is constant and a loss on spike "
            "counts or rates has no gradient; put the loss on the value its spike time encodes "
            "(a spike at step t of the window reads (3K - t)/K), or fine-tune the ANN twin "
            "with snn_encodings.finetune"
        ),
        Radix: (
            "radix neurons emit the base-r digits of their value, so the spike count is a digit "
            "sum, not monotonic in the value, and the exact neuron emits a window's value in the "
            "next window (pipelined), so a rate loss over one window has no gradient (exact "
            "mode) or one that does not follow the value (paper mode); put the loss on the "
            "value the digits encode (coding.decode_radix), or fine-tune the ANN twin with "
            "snn_encodings.finetune"
        ),
    }
)
"""Spec class -> why snnTorch's usual spike-count (rate) losses cannot train its neuron, and
what to train on instead. The surrogate gradients of these neurons are still defined and
finite; only the rate readout is constant."""


def neuron_for(spec: Spec, **options: Any) -> EncodingNeuron:
    """Build the snnTorch neuron of ``spec`` (``options`` as in :class:`EncodingNeuron`).

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
            ``argmax(1)`` is the prediction (see :meth:`predict`). For these encodings the
            output spike count alone is not the readout.
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
        spec: the encoding's spec; its encoder is ``snn_encodings.coding.encode_<name>``.
    Returns:
        Time-first ``(T, B, *)`` spikes or currents, ``T = spec.steps_per_layer``.
    Raises:
        TypeError: if the library has no encoder for ``type(spec)``.
    """
    encoder = getattr(coding, f"encode_{spec.name}", None)
    if not isinstance(spec, Spec) or encoder is None:
        raise TypeError(f"encode: no input encoder for {type(spec).__name__}")
    return encoder(data, spec)


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
