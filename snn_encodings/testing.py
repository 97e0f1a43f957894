"""Equivalence helpers: run the core neuron and compare traces (for tests and adapter authors)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from snn_encodings.functional.loop import simulate
from snn_encodings.specs.base import Spec

__all__ = ["Trace", "assert_same_trace", "run_core"]


class Trace(NamedTuple):
    """Spikes and membranes of a run, both ``(T, B, *)``."""

    spikes: Tensor
    membranes: Tensor


def run_core(spec: Spec, currents: Tensor, *, v0: float | Tensor | None = None) -> Trace:
    """Run the core step function of ``spec`` over ``currents`` ``(T, B, *)``.

    Returns the spikes and the membrane ``v`` (the first state field) after every step.
    """
    out = simulate(spec, currents, record=True, v0=v0)
    return Trace(out.spikes, out.states[0])


def assert_same_trace(
    got: Trace | tuple[Tensor, Tensor], want: Trace | tuple[Tensor, Tensor], *, atol: float = 0.0
) -> None:
    """Assert equal spikes (exactly) and membranes (exactly, or within ``atol`` for kernels).

    Raises:
        AssertionError: naming the first step and element that differ.
    """
    got_spikes, got_v = got
    want_spikes, want_v = want
    if got_spikes.shape != want_spikes.shape:
        raise AssertionError(
            f"spike shapes differ: {tuple(got_spikes.shape)} vs {tuple(want_spikes.shape)}"
        )
    if not torch.equal(got_spikes, want_spikes):
        index = (got_spikes != want_spikes).nonzero()[0].tolist()
        raise AssertionError(f"spikes differ first at (t, ...) = {index}")
    if got_v.shape != want_v.shape:
        raise AssertionError(
            f"membrane shapes differ: {tuple(got_v.shape)} vs {tuple(want_v.shape)}"
        )
    close = (
        torch.equal(got_v, want_v)
        if atol == 0
        else torch.allclose(got_v, want_v, atol=atol, rtol=0)
    )
    if not close:
        diff = (got_v - want_v).abs()
        index = (diff == diff.max()).nonzero()[0].tolist()
        raise AssertionError(f"membranes differ by up to {diff.max().item():.3g} at {index}")
