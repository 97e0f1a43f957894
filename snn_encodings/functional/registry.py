"""An encoding's pure neuron, read from its record in :mod:`snn_encodings.encoding`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from snn_encodings.encoding import encoding_for
from snn_encodings.specs.base import Spec

__all__ = ["NeuronFunctions", "neuron_functions"]


class NeuronFunctions(NamedTuple):
    """An encoding's pure neuron: ``initial_state(spec, like, *, v0=None)`` and
    ``step(current, state, spec, /, *, surrogate=None) -> (spikes, state)``."""

    initial_state: Callable[..., Any]
    step: Callable[..., Any]


def neuron_functions(spec: Spec) -> NeuronFunctions:
    """Return the state constructor and step function of ``spec``'s registered encoding.

    Raises:
        TypeError: if ``spec`` is not an instance of a registered spec class.
    """
    record = encoding_for(spec)
    return NeuronFunctions(record.load("initial_state"), record.load("step"))
