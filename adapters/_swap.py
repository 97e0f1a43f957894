"""What the three framework adapters share when a user swaps their neuron for ours.

- :func:`spec_or_default`: the spec a neuron class runs when the user passes none;
- :func:`spec_with_threshold`: a framework's ``threshold=`` / ``v_threshold=`` keyword applied to
  the spec (or refused, saying why);
- :func:`refuse`: the error for a framework keyword that has no meaning for an encoding;
- :func:`warn_short_window`: the warning for runs shorter than an encoding's window;
- :func:`warn_rate_loss`: the warning for a rate loss on an encoding whose rate is constant;
- :class:`RateLossWatch`: that warning for neurons that cannot tell whether they are the output
  layer, from the shape of the gradient a rate loss sends back;
- :func:`class_scores`: the decoder from an output layer's spikes to class scores;
- :func:`scaled`: a surrogate whose gradient is multiplied by a gain.

Only ``specs``, ``functional`` and ``coding`` are used: the adapters' swap path never needs the
converter.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor

from snn_encodings.encoding import encoding_for, encoding_notes
from snn_encodings.errors import SnnEncodingsWarning, SpecError
from snn_encodings.functional.surrogate import Surrogate
from snn_encodings.specs import Spec

__all__ = [
    "NOT_RATE_TRAINABLE",
    "RateLossWatch",
    "WINDOWED",
    "class_scores",
    "decoded",
    "gained",
    "refuse",
    "scaled",
    "spec_or_default",
    "spec_with_threshold",
    "warn_rate_loss",
    "warn_short_window",
]

WINDOWED: Mapping[type[Spec], str] = encoding_notes("window_note")
"""Spec class -> why a run must last at least the spec's window (``spec.steps_per_layer``)."""

NOT_RATE_TRAINABLE: Mapping[type[Spec], str] = encoding_notes("not_rate_trainable")
"""Spec class -> why spike-count (rate) losses and accuracies cannot train or measure its neuron,
and what to use instead. The surrogate gradients are still defined; only the rate is constant."""


def spec_or_default(spec: Spec | None, spec_type: type[Spec] | None, where: str) -> Spec:
    """Return ``spec``, or ``spec_type()`` (the spec's defaults) when ``spec`` is ``None``.

    Raises:
        TypeError: if ``spec`` is not an instance of ``spec_type``, or if it is ``None`` for a
            class that accepts every spec (``spec_type`` is ``Spec`` or ``None``).
    """
    generic = spec_type is None or spec_type is Spec
    if spec is None:
        if generic:
            raise TypeError(
                f"{where} runs any encoding, so it needs a spec, e.g. {where}(ICRate(steps=25)); "
                "or use an encoding's own class (e.g. ICRateNeuron) for its defaults"
            )
        assert spec_type is not None
        return spec_type()
    if not isinstance(spec, Spec) or (not generic and type(spec) is not spec_type):
        expected = "a neuron spec" if generic else f"a {getattr(spec_type, '__name__', '')} spec"
        raise TypeError(
            f"{where} expects {expected}, got {type(spec).__name__}; the first argument is the "
            "encoding's spec (framework parameters such as beta or threshold go by keyword)"
        )
    return spec


def spec_with_threshold(spec: Spec, threshold: float | None, where: str, keyword: str) -> Spec:
    """Apply a framework's threshold keyword to ``spec``.

    A spec with a ``threshold`` field (IC-rate, radix's normalised threshold) takes the value;
    Quartz, whose threshold follows from ``t_max``, accepts only that value.

    Raises:
        SpecError: for a threshold the encoding cannot take, saying what to pass instead.
    """
    current = getattr(spec, "threshold", None)
    if threshold is None or (current is not None and float(threshold) == float(current)):
        return spec
    fields = {f.name for f in dataclasses.fields(spec)}
    if "threshold" not in fields:
        raise SpecError(
            f"{where}: {keyword}={threshold!r} cannot be set for {type(spec).__name__}, whose "
            f"threshold ({current}) follows from its other fields; omit {keyword}"
        )
    return dataclasses.replace(spec, threshold=float(threshold))  # type: ignore[type-var]


def refuse(where: str, keyword: str, value: object, why: str, instead: str) -> SpecError:
    """The error for a framework keyword without meaning for the encoding."""
    return SpecError(f"{where}: {keyword}={value!r} is not possible: {why}; {instead}")


def warn_short_window(where: str, spec: Spec, steps: int) -> None:
    """Warn (once per message) when a run of ``steps`` steps is shorter than ``spec``'s window."""
    reason = WINDOWED.get(type(spec))
    window = spec.steps_per_layer
    if reason is None or steps >= window:
        return
    warnings.warn(
        f"{where}: the run lasted {steps} steps, fewer than {spec!r}'s window of {window} steps "
        f"(steps_per_layer); {reason}. Run at least {window} steps per layer (num_steps / T)",
        SnnEncodingsWarning,
        stacklevel=3,
    )


def warn_rate_loss(where: str, spec: Spec) -> None:
    """Warn (once per message) that a rate loss cannot train ``spec``'s neurons."""
    reason = NOT_RATE_TRAINABLE.get(type(spec))
    if reason is not None:
        warnings.warn(
            f"{where}: a rate loss reached the output spikes of {spec!r}: {reason}",
            SnnEncodingsWarning,
            stacklevel=2,
        )


class RateLossWatch:
    """Warns (once per message) when a rate loss reaches the spikes of a radix or Quartz neuron.

    A rate loss reads the spikes through a sum or mean over time (SpikingJelly's
    ``out.mean(0)``, a spike count), so the gradient it sends back is the same at every step.
    Behind a hidden layer the gradient passes through the next layer's time-dependent neurons
    and differs from step to step. So without knowing which layer is the output:
    a whole sequence whose nonzero gradient is equal at every step, or
    :attr:`STEPS` consecutive single steps with the same nonzero gradient, is a rate loss.
    Gradients that went through :func:`class_scores` are not (it reads the encoding's code).
    """

    STEPS = 3
    """Consecutive equal step gradients that identify a rate loss in step-by-step mode."""

    def __init__(self) -> None:
        self._last: Tensor | None = None
        self._same = 0

    def sequence(self, spikes: Tensor, where: str, spec: Spec) -> None:
        """Watch a time-first ``(T, B, *)`` spike block's gradient."""
        if self._watched(spikes, spec) and spikes.shape[0] > 1:

            def check(grad: Tensor) -> None:
                if not decoded(spec) and bool(grad.any()) and bool((grad == grad[:1]).all()):
                    warn_rate_loss(where, spec)

            spikes.register_hook(check)

    def step(self, spikes: Tensor, where: str, spec: Spec) -> None:
        """Watch one step's ``(B, *)`` spikes; backward visits the steps last to first."""
        if self._watched(spikes, spec):

            def check(grad: Tensor) -> None:
                last, self._last = self._last, grad.detach()
                same = last is not None and last.shape == grad.shape and torch.equal(last, grad)
                self._same = self._same + 1 if same and bool(grad.any()) else 0
                if self._same + 1 >= self.STEPS and not decoded(spec):
                    warn_rate_loss(where, spec)

            spikes.register_hook(check)

    @staticmethod
    def _watched(spikes: Tensor, spec: Spec) -> bool:
        return spikes.requires_grad and type(spec) in NOT_RATE_TRAINABLE


_DECODED: set[Spec] = set()


def decoded(spec: Spec) -> bool:
    """Whether :func:`class_scores` has passed gradient back to spikes of ``spec``."""
    return spec in _DECODED


def class_scores(
    spikes: Tensor, spec: Spec, *, v_final: Tensor | None = None, v0: float | Tensor | None = None
) -> Tensor:
    """Decode an output layer's spike record into class scores ``(B, K)``: argmax = prediction.

    Rate accuracies (snnTorch's ``accuracy_rate``, an argmax of spike counts) are only right for
    IC-rate; radix spikes are digits and a Quartz neuron spikes once, at a time that encodes
    its value. This is the readout for all three.

    Args:
        spikes: output spikes, time first ``(T, B, K)``.
        spec: the output layer's encoding.
        v_final: IC-rate only: the membrane after the last step ``(B, K)``; with
            ``spec.compensate`` it adds the residual to the count (omit it for the plain rate).
        v0: IC-rate only: the initial membrane (the spec's by default).
    Returns:
        ``(B, K)`` scores in threshold units: IC-rate's time-averaged value, radix's digit
        value (the last window of a longer record), Quartz's first-spike value (2K - t)/K.
    Raises:
        SpecError: for a radix record shorter than its window.
    """
    if spikes.requires_grad:
        spikes.register_hook(lambda grad: _DECODED.add(spec))
    record = encoding_for(spec)
    if record.scores is None:
        return record.load("decode")(spikes, spec)
    return record.load("scores")(spikes, spec, v_final=v_final, v0=v0)


def gained(x: Tensor, gain: float) -> Tensor:
    """``x`` unchanged, with the gradient flowing back through it multiplied by ``gain``."""
    if gain == 1.0 or not x.requires_grad:
        return x
    return x.detach() + gain * (x - x.detach())


def scaled(surrogate: Surrogate | None, gain: float) -> Surrogate | None:
    """``surrogate`` with its gradient multiplied by ``gain`` (its forward value unchanged)."""
    if surrogate is None or gain == 1.0:
        return surrogate

    return lambda x: gained(surrogate(x), gain)
