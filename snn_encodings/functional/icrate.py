"""Integrate-and-fire neurons with reset by subtraction and an initialised membrane (IC-SNN)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from snn_encodings.errors import SpecError
from snn_encodings.functional.surrogate import Surrogate, spike
from snn_encodings.specs.icrate import ICRate

__all__ = ["ICRateState", "SignedICRateState", "icrate_initial_state", "icrate_step"]


class ICRateState(NamedTuple):
    """State of IC-rate neurons: the membrane ``v`` (threshold units), shaped ``(B, *)``."""

    v: Tensor


class SignedICRateState(NamedTuple):
    """State of signed IC-rate neurons (``ICRate(signed=True)``): the membrane ``v``
    (threshold units) and the net spike count ``count`` so far, both shaped ``(B, *)``."""

    v: Tensor
    count: Tensor


def icrate_initial_state(
    spec: ICRate, like: Tensor, *, v0: float | Tensor | None = None
) -> ICRateState | SignedICRateState:
    r"""Create the initial state :math:`v_0`, shaped and typed like ``like``.

    Args:
        spec: encoding parameters; ``spec.default_v0`` is used when ``v0`` is ``None``.
        like: a tensor of the layer's shape ``(B, *)``; gives shape, dtype and device.
        v0: initial membrane in threshold units: a scalar, or a tensor broadcastable to
            ``like`` (e.g. one value per channel, as measured by IC-SNN Algorithm 2).
    Returns:
        The state with ``v`` of shape ``like.shape`` (a :class:`SignedICRateState` with a zero
        ``count`` for signed neurons).
    Example:
        >>> icrate_initial_state(ICRate(init="ann"), torch.zeros(2)).v.tolist()
        [0.5, 0.5]
    """
    value = spec.default_v0 if v0 is None else v0
    v = torch.zeros_like(like) + torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if spec.signed:
        return SignedICRateState(v=v, count=torch.zeros_like(v))
    return ICRateState(v=v)


def icrate_step(
    current: Tensor,
    state: ICRateState | SignedICRateState,
    spec: ICRate,
    /,
    *,
    surrogate: Surrogate | None = None,
    threshold: float | Tensor | None = None,
) -> tuple[Tensor, ICRateState | SignedICRateState]:
    r"""Advance integrate-and-fire neurons with reset by subtraction by one time step.

    .. math::
        v_t = v_{t-1} + I_t, \qquad s_t = H(v_t - \theta), \qquad v_t \leftarrow v_t - \theta s_t

    :math:`v` membrane, :math:`I` input current, :math:`\theta` threshold, all in threshold units;
    :math:`H(x) = [x \ge 0]`. After :math:`T` steps from :math:`v_0` with a constant input
    :math:`z` the count is :math:`\mathrm{clip}(\lfloor (Tz + v_0)/\theta \rfloor, 0, T)` as
    long as the membrane never goes below :math:`-\theta`.

    Signed neurons (``spec.signed``) also take a spike back: where :math:`v_t < 0` after the
    input and the net count :math:`n` is positive, :math:`s_t = -1` and
    :math:`v_t \leftarrow v_t + \theta`; :math:`n \leftarrow n + s_t`. Since
    :math:`v_t = v_0 + \sum I - \theta n_t` at every step, the net count ends at
    :math:`\max(0, \lfloor (v_0 + \sum I)/\theta \rfloor)` whenever the last membrane lies
    in :math:`[0, \theta)` (or below 0 with no spike left to take back), whatever order the
    input arrived in.

    Args:
        current: input at this step, shape ``(B, *)``.
        state: from :func:`icrate_initial_state` or the previous step; ``v`` shaped like
            ``current``.
        spec: encoding parameters.
        surrogate: gradient stand-in for the Heaviside (spike values stay exact).
        threshold: overrides ``spec.threshold`` (a learnable parameter held by an adapter).
    Returns:
        ``(spikes, new_state)``: spikes in ``{0, 1}`` (``{-1, 0, 1}`` for signed neurons),
        shape and dtype of ``current``.
    Raises:
        SpecError: if ``current`` and ``state.v`` differ in shape, or a signed neuron's state
            has no ``count``.
    Example:
        >>> spec = ICRate(steps=4, init="zero")
        >>> state = icrate_initial_state(spec, like=torch.zeros(1))
        >>> spikes, state = icrate_step(torch.tensor([1.5]), state, spec)
        >>> spikes.tolist(), state.v.tolist()
        ([1.0], [0.5])
    """
    if current.shape != state.v.shape:
        raise SpecError(
            f"icrate_step: current has shape {tuple(current.shape)} but the state has "
            f"{tuple(state.v.shape)}; reset the state when the input shape changes"
        )
    theta = spec.threshold if threshold is None else threshold
    v = state.v + current
    spikes = spike(v - theta, surrogate)
    if not spec.signed:
        v = v - theta * spikes.detach()
        return spikes, ICRateState(v=v)
    if not isinstance(state, SignedICRateState):
        raise SpecError(
            "icrate_step: signed neurons need the net spike count in their state "
            "(SignedICRateState); start from icrate_initial_state(spec, like)"
        )
    back = ((v < 0) & (state.count > 0)).to(v.dtype)
    if surrogate is not None:  # the gradient of a take-back spike, where one may happen
        soft = spike(-v, surrogate)
        back = back + (soft - soft.detach()) * (state.count > 0).to(v.dtype)
    spikes = spikes - back
    v = v - theta * spikes.detach()
    return spikes, SignedICRateState(v=v, count=state.count + spikes.detach())
