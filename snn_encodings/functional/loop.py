"""``simulate``: the only Python time loop over a neuron's step function."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from snn_encodings.errors import SpecError
from snn_encodings.functional.finite import all_finite
from snn_encodings.functional.registry import neuron_functions
from snn_encodings.functional.surrogate import Surrogate
from snn_encodings.specs.base import Spec

__all__ = ["Simulation", "simulate"]


class Simulation(NamedTuple):
    """Result of :func:`simulate`.

    Attributes:
        spikes: ``(T, B, *)`` spikes in ``{0, 1}``.
        state: the state after the last step.
        states: with ``record=True``, the state after every step, each field stacked to
            ``(T, B, *)``; otherwise ``None``.
    """

    spikes: Tensor
    state: Any
    states: Any


def simulate(
    spec: Spec,
    currents: Tensor,
    state: Any = None,
    *,
    record: bool = False,
    surrogate: Surrogate | None = None,
    v0: float | Tensor | None = None,
    check: bool = True,
    **overrides: Any,
) -> Simulation:
    r"""Run ``spec``'s step function over a time-first sequence of input currents.

    Args:
        spec: the encoding's neuron spec.
        currents: ``(T, B, *)`` input currents in threshold units.
        state: state to start from; ``None`` means the encoding's initial state.
        record: also return every intermediate state.
        surrogate: gradient stand-in for the spike nonlinearity.
        v0: initial membrane handed to the state constructor when ``state`` is ``None``.
        check: reject NaN/inf currents (one pass over them); a converted network's layers turn
            it off, their inputs were checked at the network's input.
        overrides: keyword overrides passed to every step (e.g. ``threshold=``).
    Returns:
        A :class:`Simulation`.
    Raises:
        SpecError: if ``currents`` has fewer than 2 dimensions or contains NaN/inf.
    Example:
        >>> from snn_encodings.specs import ICRate
        >>> out = simulate(ICRate(steps=4, init="zero"), torch.full((4, 1), 0.5))
        >>> out.spikes.flatten().tolist()
        [0.0, 1.0, 0.0, 1.0]
    """
    if currents.dim() < 2:
        raise SpecError(
            f"simulate: currents must be time-first (T, B, *), got shape {tuple(currents.shape)}"
        )
    if check and not all_finite(currents):
        raise SpecError("simulate: currents contain NaN or inf")
    functions = neuron_functions(spec)
    if state is None:
        state = functions.initial_state(spec, currents[0], v0=v0)
    spikes = []
    history = []
    for current in currents:
        out, state = functions.step(current, state, spec, surrogate=surrogate, **overrides)
        spikes.append(out)
        if record:
            history.append(state)
    states = None
    if record:
        states = type(state)(*(torch.stack(field) for field in zip(*history)))
    return Simulation(torch.stack(spikes), state, states)
