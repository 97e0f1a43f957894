"""The one table from spec class to its state constructor and step function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from snn_encodings.specs.base import Spec

__all__ = ["NeuronFunctions", "neuron_functions", "register_neuron"]


class NeuronFunctions(NamedTuple):
    """An encoding's pure neuron: ``initial_state(spec, like, *, v0=None)`` and
    ``step(current, state, spec, /, *, surrogate=None) -> (spikes, state)``."""

    initial_state: Callable[..., Any]
    step: Callable[..., Any]


_TABLE: dict[type[Spec], NeuronFunctions] = {}


def register_neuron(
    spec_type: type[Spec], initial_state: Callable[..., Any], step: Callable[..., Any]
) -> None:
    """Make ``spec_type``'s neuron known to :func:`simulate` and the adapters."""
    _TABLE[spec_type] = NeuronFunctions(initial_state, step)


def neuron_functions(spec: Spec) -> NeuronFunctions:
    """Return the state constructor and step function for ``spec``.

    Raises:
        TypeError: if ``spec`` is not an instance of a registered spec class.
    """
    try:
        return _TABLE[type(spec)]
    except KeyError:
        known = ", ".join(sorted(t.__name__ for t in _TABLE))
        raise TypeError(f"expected a neuron spec ({known}), got {type(spec).__name__}") from None
