"""SpikingJelly 2.x nodes that run the snn-encodings neurons.

Each node is a :class:`spikingjelly.activation_based.neuron.BaseNode`: SpikingJelly's tooling
(``functional.reset_net``, ``functional.set_step_mode``, ``layer.SeqToANNContainer``,
``base.to_functional_forward``, ann2snn's ``neuron_factory``) treats it as one of its own. The
maths is the core's: a single step calls ``neuron_functions(spec).step`` and the multi-step
mode ``'m'`` calls :func:`snn_encodings.functional.simulate` (or, with ``backend="cupy"``, our
CuPy kernel, tested against ``simulate`` spike for spike).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import Tensor, nn

from snn_encodings.errors import ConversionError, SpecError
from snn_encodings.functional import neuron_functions, simulate
from snn_encodings.specs import ICRate, Quartz, Radix
from snn_encodings.specs.base import Spec

from .. import _swap
from .._swap import refuse, scaled, spec_or_default, spec_with_threshold, warn_short_window
from . import kernels

__all__ = [
    "NEURONS",
    "SURROGATE_GAIN",
    "ICRateNode",
    "Node",
    "QuartzNode",
    "RadixNode",
    "class_scores",
]

class_scores = _swap.class_scores

Backend = Literal["torch", "cupy"]
StepMode = Literal["s", "m"]

_DEFAULT: Any = object()

SURROGATE_GAIN = 0.5
"""Default factor on the surrogate gradient. An IC-rate membrane starts at :math:`\theta/2`,
on the surrogate's slope, where ``IFNode``'s starts at 0, a full threshold below: with the
same surrogate our gradients at initialisation came out 4-18x ``IFNode``'s on the ann2snn
example CNN trained directly (larger the more node layers they cross); halving the surrogate's
gradient per layer brings them within about 2x."""


class Node(neuron.BaseNode):
    r"""A SpikingJelly node running the core neuron of any registered spec.

    ``Node(spec)`` runs ``neuron_functions(spec)``; :class:`ICRateNode`, :class:`RadixNode`
    and :class:`QuartzNode` are the same node with a default spec (``ICRateNode()`` =
    ``Node(ICRate())``). The swap keeps SpikingJelly's keywords::

        neuron.IFNode(v_reset=None, surrogate_function=surrogate.ATan(), detach_reset=True)
        ICRateNode(surrogate_function=surrogate.ATan(), detach_reset=True)

    Every field of the encoding's state (``State._fields``; the first is the membrane ``v``)
    is a SpikingJelly memory declared with ``register_memory``, so ``functional.reset_net``
    restores the encoding's initial state (``<enc>_initial_state(spec, like, v0=v0)``, e.g.
    :math:`v_0 = \theta/2` for IC-rate, not zero), rebuilt for the next input's shape. Radix and
    Quartz nodes need a whole window (``spec.steps_per_layer`` steps) per run: a shorter run
    warns once (:class:`~snn_encodings.errors.SnnEncodingsWarning`), in ``'m'`` mode when
    called, in ``'s'`` mode at the next reset. So does a rate loss (``out_fr = out.mean(0)``
    and an MSE) that reaches their spikes: their rate is fixed by the code, so decode with
    :func:`class_scores` instead (:class:`~snn_encodings.adapters._swap.RateLossWatch`).

    Args:
        spec: the encoding's neuron spec; ``None`` gives the class's default (per-encoding
            classes only).
        v_threshold: the threshold, written into the spec (``ICRate(threshold=...)``, radix's
            normalised threshold); Quartz accepts only its own.
        v_reset: ``None`` (soft reset, what these neurons do); Quartz also accepts ``0.0``
            (it zeroes its membrane when it fires). Other values raise.
        surrogate_function: a ``spikingjelly.activation_based.surrogate`` function (a new
            ``surrogate.Sigmoid()`` by default) or ``None``. Only its gradient is used: spike
            values stay exact (core ``functional.surrogate.spike``).
        detach_reset: ``True`` or ``None``: the core step always detaches the reset; ``False``
            raises.
        step_mode: ``'s'`` (input ``(B, *)``) or ``'m'`` (input ``(T, B, *)``).
        backend: ``'torch'`` (the core step functions) or ``'cupy'`` (our CUDA kernel for the
            multi-step mode; single steps always use the core step). ``'cupy'`` needs a CUDA
            GPU, ``snn-encodings[cupy]`` and an encoding with a kernel: IC-rate (plain and
            signed) and radix (forward and surrogate-gradient backward), Quartz (forward
            only); see :mod:`.kernels`. Under ``kernels.use_launcher(kernels.EMULATED)`` the
            same kernels run on CPU tensors (compiled with g++), which is how CI tests this
            path.
        store_v_seq: in ``'m'`` mode keep the membrane after every step in ``self.v_seq``.
        v0: initial membrane in threshold units handed to the core state constructor: a float
            or a tensor broadcastable to the layer (per channel); ``None`` uses the spec's rule.
        run_steps: if set, every run (from one reset to the next) must last exactly this many
            steps; a longer run raises at its extra step, a shorter one at the next reset. The
            ann2snn recipe sets it to ``spec.steps``.
        surrogate_gain: factor on the surrogate's gradient (spikes unchanged); the default
            :data:`SURROGATE_GAIN` keeps gradient norms at initialisation near ``IFNode``'s.

    Inputs/Outputs:
        ``'s'``: current ``(B, *)`` -> spikes ``(B, *)``; ``'m'``: currents ``(T, B, *)`` ->
        spikes ``(T, B, *)``; spikes in ``{0, 1}`` (``{-1, 0, 1}`` for signed IC-rate) in the
        input's dtype.

    Raises:
        TypeError: if ``spec`` is not of the node's spec class (or not a registered spec).
        SpecError: for a keyword the encoding cannot honour, naming what to pass instead, or
            an input whose shape differs from the state's without a reset.
        ValueError: for an unknown step mode or backend.
        RuntimeError: for ``backend='cupy'`` without CuPy or a GPU.
    """

    #: The spec class this node accepts; ``None`` accepts every registered spec.
    spec_type: ClassVar[type[Spec] | None] = None

    def __init__(
        self,
        spec: Spec | None = None,
        *,
        v_threshold: float | None = None,
        v_reset: float | None = None,
        surrogate_function: nn.Module | None = _DEFAULT,
        detach_reset: bool | None = None,
        step_mode: StepMode = "s",
        backend: Backend = "torch",
        store_v_seq: bool = False,
        v0: float | Tensor | None = None,
        run_steps: int | None = None,
        surrogate_gain: float = SURROGATE_GAIN,
    ) -> None:
        name = type(self).__name__
        spec = spec_or_default(spec, self.spec_type, name)
        _check_jelly_keywords(name, spec, v_reset, detach_reset)
        spec = spec_with_threshold(spec, v_threshold, name, "v_threshold")
        functions = neuron_functions(spec)  # TypeError for an unregistered spec
        if step_mode not in ("s", "m"):
            raise ValueError(f"{name}: step_mode must be 's' or 'm', got {step_mode!r}")
        if backend not in ("torch", "cupy"):
            raise ValueError(f"{name}: backend must be 'torch' or 'cupy', got {backend!r}")
        if surrogate_function is _DEFAULT:
            surrogate_function = surrogate.Sigmoid()
        if backend == "cupy":
            _check_cupy(name, spec, surrogate_function)
        super().__init__(
            v_threshold=_threshold(spec),
            v_reset=None,
            surrogate_function=surrogate_function,
            detach_reset=True,
            step_mode=step_mode,
            store_v_seq=store_v_seq,
        )
        self.spec = spec
        self.backend: Backend = backend
        self.run_steps = run_steps
        self.surrogate_gain = float(surrogate_gain)
        self._steps = 0
        self._rate_watch = _swap.RateLossWatch()
        self._functions = functions
        self._state_type = type(functions.initial_state(spec, torch.zeros(1)))
        for field in self._state_type._fields[1:]:
            self.register_memory(field, None)
        if isinstance(v0, Tensor):
            self.register_buffer("v0", v0.detach().clone())
        else:
            self.v0 = v0

    @property
    def _surrogate(self) -> Any:
        return scaled(self.surrogate_function, self.surrogate_gain)

    def _count(self, steps: int, *, fresh: bool) -> None:
        """Book ``steps`` more steps of the current run (a new run if ``fresh``)."""
        name = type(self).__name__
        if fresh:
            self._end_run()
        self._steps += steps
        if self.run_steps is not None and self._steps > self.run_steps:
            self._steps = 0  # the run is abandoned; the next reset starts afresh
            raise ConversionError(
                f"{name}: this network was converted for {self.spec!r}, a run of "
                f"{self.run_steps} steps, but the loop has run {self._steps} steps since the "
                f"last functional.reset_net; loop T = {self.run_steps} times, or convert with "
                f"recipe({type(self.spec).__name__}(steps=T), ...)"
            )

    def _end_run(self) -> None:
        steps, self._steps = self._steps, 0
        if not steps:
            return
        warn_short_window(type(self).__name__, self.spec, steps)
        if self.run_steps is not None and steps != self.run_steps:
            raise ConversionError(
                f"{type(self).__name__}: this network was converted for {self.spec!r}, a run "
                f"of {self.run_steps} steps, but the last run had {steps}; loop T = "
                f"{self.run_steps} times between functional.reset_net calls, or convert with "
                f"recipe({type(self.spec).__name__}(steps=T), ...)"
            )

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, step_mode={self.step_mode}, backend={self.backend}"

    def materialize_states(
        self, inputs: tuple[Tensor, ...], states: tuple[object, ...], step_mode: str
    ) -> tuple[object, ...]:
        """Turn reset sentinels into the encoding's initial state shaped like the input."""
        x = inputs[0]
        name = type(self).__name__
        least = 2 if step_mode == "m" else 1
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < least:
            layout = "(T, B, *)" if step_mode == "m" else "(B, *)"
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise SpecError(
                f"{name} in step mode {step_mode!r} needs a floating-point input shaped "
                f"{layout}, got {got}"
            )
        if step_mode == "m":
            if x.shape[0] == 0:
                raise SpecError(f"{name}: the input sequence has no time steps (T = 0)")
            x = x[0]
        tensors = [s for s in states if isinstance(s, Tensor)]
        fresh = len(tensors) != len(states)
        if step_mode == "s":
            self._count(1, fresh=fresh)
        if fresh:
            return tuple(self._functions.initial_state(self.spec, x, v0=self.v0))
        v = tensors[0]
        if v.shape != x.shape:
            raise SpecError(
                f"{name}: input of shape {tuple(x.shape)} but the state is {tuple(v.shape)}; "
                "call functional.reset_net(net) before a batch of another shape"
            )
        return tuple(
            s.to(device=x.device, dtype=x.dtype if s.is_floating_point() else s.dtype)
            for s in tensors
        )

    def single_step_functional_forward(
        self, inputs: tuple[Tensor, ...], states: tuple[object, ...], **kwargs: object
    ) -> tuple[tuple[Tensor, ...], tuple[object, ...]]:
        """One core step: ``neuron_functions(spec).step(current, state, spec)``."""
        state = self._state_type(*states)
        spikes, state = self._functions.step(inputs[0], state, self.spec, surrogate=self._surrogate)
        self._rate_watch.step(spikes, type(self).__name__, self.spec)
        return (spikes,), tuple(state)

    def multi_step_functional_forward(
        self, inputs: tuple[Tensor, ...], states: tuple[object, ...], **kwargs: object
    ) -> tuple[tuple[Tensor, ...], tuple[object, ...]]:
        """The whole sequence: core ``simulate``, or the CuPy kernel with ``backend='cupy'``."""
        spikes, state, _ = self._sequence(inputs[0], states, record=False)
        return (spikes,), state

    def multi_step_forward(self, x_seq: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        fresh = not all(isinstance(m, Tensor) for m in self._memories.values())
        states = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")
        self._count(x_seq.shape[0], fresh=fresh)
        if fresh:
            warn_short_window(type(self).__name__, self.spec, x_seq.shape[0])
        spikes, state, v_seq = self._sequence(x_seq, states, record=self.store_v_seq)
        self._rate_watch.sequence(spikes, type(self).__name__, self.spec)
        for name, value in zip(self._memories, state, strict=True):
            self._memories[name] = value
        if self.store_v_seq:
            self.v_seq = v_seq
        return spikes

    def _sequence(
        self, x_seq: Tensor, states: tuple[object, ...], *, record: bool
    ) -> tuple[Tensor, tuple[object, ...], Tensor | None]:
        if self.backend == "cupy":
            spikes, state, v_seq = kernels.multi_step(
                self.spec, x_seq, states, self.surrogate_function
            )
            # the kernels detach the reset, so the gain on each spike's gradient is a gain on
            # the output's gradient, as in the torch path
            return _swap.gained(spikes, self.surrogate_gain), state, v_seq
        out = simulate(
            self.spec,
            x_seq,
            self._state_type(*states),
            record=record,
            surrogate=self._surrogate,
        )
        return out.spikes, tuple(out.state), out.states[0] if record else None


def _threshold(spec: Spec) -> float:
    """SpikingJelly's ``v_threshold`` (read by ann2snn's scalers): ``spec.threshold`` if numeric."""
    threshold = getattr(spec, "threshold", None)
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return float(threshold)
    return 1.0


def _check_jelly_keywords(
    where: str, spec: Spec, v_reset: float | None, detach_reset: bool | None
) -> None:
    own_zero = isinstance(spec, Quartz)
    if v_reset is not None and not (own_zero and float(v_reset) == 0.0):
        instead = "omit v_reset (or pass None" + (" or 0.0)" if own_zero else ")")
        why = (
            f"a {type(spec).__name__} neuron resets by its own rule (IC-rate and radix subtract "
            "the threshold, a soft reset; Quartz zeroes its membrane once it fires)"
        )
        raise refuse(where, "v_reset", v_reset, why, instead)
    if detach_reset is False:
        why = "the core step always detaches the reset from the gradient"
        raise refuse(where, "detach_reset", False, why, "omit detach_reset (or pass True)")


def _check_cupy(where: str, spec: Spec, surrogate_function: Any) -> None:
    if not kernels.has_kernel(spec):
        raise ValueError(
            f"{where}: backend='cupy' has no kernel for {type(spec).__name__} (kernels: "
            f"{', '.join(t.__name__ for t in kernels.KERNEL_SOURCES)}); use backend='torch'"
        )
    kernels.surrogate_kind(surrogate_function)
    if kernels.current_launcher() is kernels.CUPY:
        kernels.require_cupy()


class ICRateNode(Node):
    """IC-rate integrate-and-fire :class:`Node` (core ``icrate_step``); default ``ICRate()``."""

    spec_type = ICRate


class RadixNode(Node):
    """Radix :class:`Node` (core ``radix_step``, either mode), default ``Radix()``;
    ``backend='cupy'`` runs the ``radix.cu`` kernels (forward and surrogate-gradient backward)."""

    spec_type = Radix


class QuartzNode(Node):
    """Quartz time-to-first-spike :class:`Node` (core ``quartz_step``), default ``Quartz()``;
    ``backend='cupy'`` runs the forward-only ``quartz.cu`` kernel (inference)."""

    spec_type = Quartz


NEURONS: Mapping[type[Spec], type[Node]] = {
    cls.spec_type: cls for cls in (ICRateNode, RadixNode, QuartzNode) if cls.spec_type is not None
}
"""Spec class -> its SpikingJelly node class."""
