"""Spike trains between the stages of a simulated window: a stage's input currents, and
releasing trains no later stage reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from snn_encodings.conversion.rules.base import Rule
    from snn_encodings.conversion.synapse import Synapse

__all__ = ["currents", "drop_read", "with_bias"]


def currents(
    synapse: Synapse,
    sequences: Sequence[Tensor | None] | Mapping[int, Tensor],
    rule: Rule,
    steps: int,
    steps_per_call: int | None,
) -> Tensor:
    """A stage's input currents ``(T, B, *)`` over ``steps`` steps: its synapse's drive from the
    value nodes' trains (event-driven where the rule's trains are sparse in time, else in calls
    of ``steps_per_call`` steps) plus the rule's bias currents."""
    drive = synapse.drive(
        sequences, event_driven=rule.sparse_in_time, steps_per_call=steps_per_call
    )
    return with_bias(drive, rule.bias_currents(synapse.bias, steps).unsqueeze(1))


def drop_read(
    sequences: list[Tensor | None], inputs: list[int], last_use: dict[int, int], index: int
) -> None:
    """Release the spike trains that stage ``index`` is the last to read (before its neurons
    run, so that a layer's input trains and output trains are not held at once)."""
    for source in inputs:
        if last_use[source] == index:
            sequences[source] = None


def with_bias(drive: Tensor, bias: Tensor) -> Tensor:
    """Currents ``(T, B, *)``: the synapse's fresh ``drive`` plus the bias currents ``(T, 1, *)``,
    added in place; where both repeat one step (stride 0 in time) the sum is formed once and
    repeated too."""
    if drive.stride(0) == 0 and bias.stride(0) == 0:
        return (drive[0] + bias[0]).expand_as(drive)
    if drive.stride(0) == 0:
        return drive + bias
    return drive.add_(bias)
