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

from snn_encodings.errors import SpecError
from snn_encodings.functional import neuron_functions, simulate
from snn_encodings.specs import ICRate, Quartz, Radix
from snn_encodings.specs.base import Spec

from . import kernels

__all__ = ["NEURONS", "EncodingNode", "ICRateNode", "QuartzNode", "RadixNode"]

Backend = Literal["torch", "cupy"]
StepMode = Literal["s", "m"]

_DEFAULT: Any = object()


class EncodingNode(neuron.BaseNode):
    r"""A SpikingJelly node running the core neuron of any registered spec.

    Every field of the encoding's state (``State._fields``; the first is the membrane ``v``)
    is a SpikingJelly memory declared with ``register_memory``, so ``functional.reset_net``
    restores the encoding's initial state (``<enc>_initial_state(spec, like, v0=v0)``, e.g.
    :math:`v_0 = \theta/2` for IC-rate, not zero), rebuilt for the next input's shape.

    Args:
        spec: the encoding's neuron spec.
        surrogate_function: a ``spikingjelly.activation_based.surrogate`` function (a new
            ``surrogate.Sigmoid()`` by default) or ``None``. Only its gradient is used: spike
            values stay exact (core ``functional.surrogate.spike``).
        step_mode: ``'s'`` (input ``(B, *)``) or ``'m'`` (input ``(T, B, *)``).
        backend: ``'torch'`` (the core step functions) or ``'cupy'`` (our CUDA kernel for the
            multi-step mode; single steps always use the core step). ``'cupy'`` needs a CUDA
            GPU, ``snn-encodings[cupy]`` and an encoding with a kernel: IC-rate and radix
            (forward and surrogate-gradient backward), Quartz (forward only); see
            :mod:`.kernels`.
        v0: initial membrane in threshold units handed to the core state constructor: a float
            or a tensor broadcastable to the layer (per channel); ``None`` uses the spec's rule.
        store_v_seq: in ``'m'`` mode keep the membrane after every step in ``self.v_seq``.

    Inputs/Outputs:
        ``'s'``: current ``(B, *)`` -> spikes ``(B, *)``; ``'m'``: currents ``(T, B, *)`` ->
        spikes ``(T, B, *)``; spikes in ``{0, 1}`` in the input's dtype.

    Raises:
        TypeError: if ``spec`` is not of the node's spec class (or not a registered spec).
        ValueError: for an unknown step mode or backend; :class:`SpecError` for an input
            whose shape differs from the state's without a reset.
        RuntimeError: for ``backend='cupy'`` without CuPy or a GPU.
    """

    #: The spec class this node accepts; ``None`` accepts every registered spec.
    spec_type: ClassVar[type[Spec] | None] = None

    def __init__(
        self,
        spec: Spec,
        *,
        surrogate_function: nn.Module | None = _DEFAULT,
        step_mode: StepMode = "s",
        backend: Backend = "torch",
        v0: float | Tensor | None = None,
        store_v_seq: bool = False,
    ) -> None:
        name = type(self).__name__
        if self.spec_type is not None and not isinstance(spec, self.spec_type):
            raise TypeError(
                f"{name} expects a {self.spec_type.__name__} spec, got {type(spec).__name__}"
            )
        functions = neuron_functions(spec)  # TypeError for an unregistered spec
        if step_mode not in ("s", "m"):
            raise ValueError(f"{name}: step_mode must be 's' or 'm', got {step_mode!r}")
        if backend not in ("torch", "cupy"):
            raise ValueError(f"{name}: backend must be 'torch' or 'cupy', got {backend!r}")
        if surrogate_function is _DEFAULT:
            surrogate_function = surrogate.Sigmoid()
        if backend == "cupy":
            if not kernels.has_kernel(spec):
                raise ValueError(
                    f"{name}: backend='cupy' has no kernel for {type(spec).__name__} (kernels: "
                    f"{', '.join(t.__name__ for t in kernels.KERNEL_SOURCES)}); use "
                    "backend='torch'"
                )
            kernels.surrogate_kind(surrogate_function)
            kernels.require_cupy()
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
        self._functions = functions
        self._state_type = type(functions.initial_state(spec, torch.zeros(1)))
        for field in self._state_type._fields[1:]:
            self.register_memory(field, None)
        if isinstance(v0, Tensor):
            self.register_buffer("v0", v0.detach().clone())
        else:
            self.v0 = v0

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
        if len(tensors) != len(states):
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
        spikes, state = self._functions.step(
            inputs[0], state, self.spec, surrogate=self.surrogate_function
        )
        return (spikes,), tuple(state)

    def multi_step_functional_forward(
        self, inputs: tuple[Tensor, ...], states: tuple[object, ...], **kwargs: object
    ) -> tuple[tuple[Tensor, ...], tuple[object, ...]]:
        """The whole sequence: core ``simulate``, or the CuPy kernel with ``backend='cupy'``."""
        spikes, state, _ = self._sequence(inputs[0], states, record=False)
        return (spikes,), state

    def multi_step_forward(self, x_seq: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        states = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")
        spikes, state, v_seq = self._sequence(x_seq, states, record=self.store_v_seq)
        for name, value in zip(self._memories, state, strict=True):
            self._memories[name] = value
        if self.store_v_seq:
            self.v_seq = v_seq
        return spikes

    def _sequence(
        self, x_seq: Tensor, states: tuple[object, ...], *, record: bool
    ) -> tuple[Tensor, tuple[object, ...], Tensor | None]:
        if self.backend == "cupy":
            return kernels.multi_step(self.spec, x_seq, states, self.surrogate_function)
        out = simulate(
            self.spec,
            x_seq,
            self._state_type(*states),
            record=record,
            surrogate=self.surrogate_function,
        )
        return out.spikes, tuple(out.state), out.states[0] if record else None


def _threshold(spec: Spec) -> float:
    """SpikingJelly's ``v_threshold`` (read by ann2snn's scalers): ``spec.threshold`` if numeric."""
    threshold = getattr(spec, "threshold", None)
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return float(threshold)
    return 1.0


class ICRateNode(EncodingNode):
    """IC-rate integrate-and-fire node (core ``icrate_step``); ``v_threshold`` = spec.threshold."""

    spec_type = ICRate


class RadixNode(EncodingNode):
    """Radix node (core ``radix_step``, either mode); ``backend='cupy'`` runs the ``radix.cu``
    kernels (forward and surrogate-gradient backward)."""

    spec_type = Radix


class QuartzNode(EncodingNode):
    """Quartz time-to-first-spike node (core ``quartz_step``, either mode); ``backend='cupy'``
    runs the forward-only ``quartz.cu`` kernel (inference)."""

    spec_type = Quartz


NEURONS: Mapping[type[Spec], type[EncodingNode]] = {
    cls.spec_type: cls for cls in (ICRateNode, RadixNode, QuartzNode) if cls.spec_type is not None
}
"""Spec class -> its SpikingJelly node class."""
