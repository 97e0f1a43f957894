"""Pure torch neurons: per encoding a ``State``, ``<enc>_initial_state`` and ``<enc>_step``."""

from __future__ import annotations

from snn_encodings.functional.icrate import (
    ICRateState,
    SignedICRateState,
    icrate_initial_state,
    icrate_step,
)
from snn_encodings.functional.loop import Simulation, simulate
from snn_encodings.functional.quartz import (
    QuartzState,
    quartz_first_spikes,
    quartz_initial_state,
    quartz_step,
)
from snn_encodings.functional.radix import RadixState, radix_initial_state, radix_step, radix_twin
from snn_encodings.functional.registry import NeuronFunctions, neuron_functions

__all__ = [
    "ICRateState",
    "NeuronFunctions",
    "QuartzState",
    "RadixState",
    "SignedICRateState",
    "Simulation",
    "icrate_initial_state",
    "icrate_step",
    "neuron_functions",
    "quartz_first_spikes",
    "quartz_initial_state",
    "quartz_step",
    "radix_initial_state",
    "radix_step",
    "radix_twin",
    "simulate",
]
