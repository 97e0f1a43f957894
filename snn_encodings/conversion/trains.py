"""Spike trains between the stages of a simulated window: releasing them, adding bias currents."""

from __future__ import annotations

from torch import Tensor

__all__ = ["drop_read", "with_bias"]


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
