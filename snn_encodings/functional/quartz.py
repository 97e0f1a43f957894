"""Quartz neurons: non-leaky integrate-and-fire with a synaptic current, one spike per window."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from snn_encodings.errors import SpecError
from snn_encodings.functional.surrogate import Surrogate, spike
from snn_encodings.specs.quartz import Quartz

__all__ = ["QuartzState", "quartz_first_spikes", "quartz_initial_state", "quartz_step"]


class QuartzState(NamedTuple):
    """State of Quartz neurons, every field shaped ``(B, *)``.

    Attributes:
        v: membrane (threshold units of :math:`K`, i.e. steps).
        i: synaptic current (membrane change per step).
        t: step within the window (int64), 0 at the window's start.
        fired: whether the neuron has spiked in this window (bool); it then stays silent.
    """

    v: Tensor
    i: Tensor
    t: Tensor
    fired: Tensor


def quartz_initial_state(
    spec: Quartz, like: Tensor, *, v0: float | Tensor | None = None
) -> QuartzState:
    r"""Create the state at the start of a window: :math:`v = v_0`, :math:`i = 0`, :math:`t = 0`.

    Args:
        spec: encoding parameters.
        like: a tensor of the layer's shape ``(B, *)``; gives shape, dtype and device.
        v0: initial membrane (default 0); a scalar or a tensor broadcastable to ``like``.
    Returns:
        The state, each field of shape ``like.shape``.
    Example:
        >>> state = quartz_initial_state(Quartz(t_max=4), torch.zeros(2))
        >>> state.v.tolist(), state.t.tolist(), state.fired.tolist()
        ([0.0, 0.0], [0, 0], [False, False])
    """
    value = 0.0 if v0 is None else v0
    v = torch.zeros_like(like) + torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return QuartzState(
        v=v,
        i=torch.zeros_like(like),
        t=torch.zeros(like.shape, dtype=torch.int64, device=like.device),
        fired=torch.zeros(like.shape, dtype=torch.bool, device=like.device),
    )


def quartz_step(
    current: Tensor,
    state: QuartzState,
    spec: Quartz,
    /,
    *,
    surrogate: Surrogate | None = None,
    rectify: bool | None = None,
) -> tuple[Tensor, QuartzState]:
    r"""Advance Quartz neurons by one step of the window (Lenz et al. Eqs. 2-5, as coded).

    .. math::
        i_t = \begin{cases} 1 & t = 2K \\ i_{t-1} + I_t & \text{otherwise} \end{cases}
        \qquad v_t = v_{t-1} + i_t

        s_t = (1 - f_{t-1})\,\max\big(g_t\,H(v_t - \theta),\ r\,[t = 3K]\big),
        \qquad f_t = f_{t-1} \lor s_t, \qquad (v_t, i_t) \leftarrow (0, 0) \text{ if } f_t

    :math:`I` input current (weighted input spikes), :math:`i` synaptic current, :math:`v`
    membrane, :math:`g_t = [t \ge 2K]` in exact mode (1 in paper mode), :math:`K` =
    ``spec.t_max``, :math:`\theta` = ``spec.threshold`` (:math:`K + 1/2` or :math:`K + 1`),
    :math:`f` the has-fired flag, :math:`r` = ``rectify``; time in steps, :math:`t` counted from
    the window's start by the state.

    - *Readout synapse* at :math:`2K`: setting :math:`i = 1` equals a counter spike of weight
      :math:`1 - \sum_j w_j` (``1 - b - sum w`` with the bias spike among the inputs), i.e.
      one minus the current received so far, so every neuron then ramps with unit slope. With
      inputs :math:`x_j = n_j/K` arriving at :math:`2K - n_j` the membrane is
      :math:`v_{2K} = \sum_j w_j n_j + 1 = Kz + 1` and the neuron fires
      :math:`\lceil \theta - 1 - Kz\rceil` steps later (Eqs. 6-8; derivation reconstructed).
      Inputs that arrive after :math:`2K` are integrated without compensation (they are
      outside the encoding).
    - *Exact mode* (``spec.mode == "exact"``): no spike before the readout step :math:`2K`; a
      neuron whose membrane reached :math:`\theta` during the encode phase fires at :math:`2K`
      (value 1, the twin's clipped value) instead of early.
    - *Rectifier* at :math:`3K`: a neuron that has not fired fires now (encodes 0, ReLU, Eq. 5).
    - A spike clears :math:`v` and :math:`i` and the neuron stays silent for the rest of the
      window (the refractory period of Eq. 5).

    Args:
        current: input current at this step, shape ``(B, *)``.
        state: from :func:`quartz_initial_state` or the previous step.
        spec: encoding parameters.
        surrogate: gradient stand-in for the Heaviside (spike values stay exact).
        rectify: overrides ``spec.rectify`` (the output layer runs without the rectifier).
    Returns:
        ``(spikes, new_state)``: spikes in ``{0, 1}``, shape and dtype of ``current``.
    Raises:
        SpecError: if ``current`` and ``state.v`` differ in shape.
    Example:
        One input of weight 1 and value 1/2 (``n = 1``) with ``K = 2``: it arrives at step
        :math:`2K - 1 = 3`, the readout at 4 gives :math:`v = Kz + 1 = 2`, and the neuron
        crosses :math:`\theta = 2.5` at step 5, i.e. :math:`3K - \mathrm{round}(Kz)`.

        >>> spec = Quartz(t_max=2)
        >>> state = quartz_initial_state(spec, torch.zeros(1))
        >>> trace = []
        >>> for current in [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]:
        ...     s, state = quartz_step(torch.tensor([current]), state, spec)
        ...     trace.append(int(s.item()))
        >>> trace
        [0, 0, 0, 0, 0, 1, 0, 0]
    """
    if current.shape != state.v.shape:
        raise SpecError(
            f"quartz_step: current has shape {tuple(current.shape)} but the state has "
            f"{tuple(state.v.shape)}; reset the state when the input shape changes"
        )
    rect = spec.rectify if rectify is None else rectify
    at_read = state.t == spec.read_step
    i = torch.where(at_read, torch.ones_like(state.i), state.i + current)
    v = state.v + i
    spikes = spike(v - spec.threshold, surrogate)
    if spec.first_fire_step:
        spikes = torch.where(state.t < spec.first_fire_step, torch.zeros_like(spikes), spikes)
    if rect:
        forced = state.t == spec.rectify_step
        spikes = torch.where(forced, torch.ones_like(spikes), spikes)
    spikes = torch.where(state.fired, torch.zeros_like(spikes), spikes)
    fired = state.fired | (spikes.detach() > 0)
    zero = torch.zeros_like(v)
    return spikes, QuartzState(
        v=torch.where(fired, zero, v),
        i=torch.where(fired, zero, i),
        t=state.t + 1,
        fired=fired,
    )


def quartz_first_spikes(
    currents: Tensor, spec: Quartz, *, rectify: bool | None = None
) -> tuple[Tensor, QuartzState]:
    r"""Closed-form Quartz layer: the spikes of :func:`quartz_step` over a window, without a loop.

    Before its spike a neuron's trajectory does not depend on the spike, so with
    :math:`C_t = \sum_{s \le t} I_s`:

    .. math::
        i_t = \begin{cases} C_t & t < 2K \\ 1 + C_t - C_{2K} & t \ge 2K \end{cases},
        \qquad v_t = \sum_{s \le t} i_s,
        \qquad t^* = \min\{t \ge t_0 : v_t \ge \theta \ \lor\ (r \land t = 3K)\}

    (:math:`t_0` = ``spec.first_fire_step``) and the neuron spikes once, at :math:`t^*`. Two
    cumulative sums replace the time loop.
    With currents on a dyadic grid (what conversion produces) every sum is exact, so the
    spikes equal :func:`quartz_step`'s spike for spike; with arbitrary float currents the two
    sum in different orders and can differ where :math:`v_t` lands within rounding of
    :math:`\theta`.

    Args:
        currents: ``(T, B, *)`` input currents of one window, starting at step 0.
        spec: encoding parameters.
        rectify: overrides ``spec.rectify``.
    Returns:
        ``(spikes, final_state)``: spikes ``(T, B, *)`` in ``{0, 1}`` (dtype of ``currents``)
        and the state :func:`quartz_step` would hold after the last step.
    Raises:
        SpecError: if ``currents`` has fewer than 2 dimensions.
    Example:
        >>> spec = Quartz(t_max=2)
        >>> currents = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view(8, 1)
        >>> quartz_first_spikes(currents, spec)[0].flatten().int().tolist()
        [0, 0, 0, 0, 0, 1, 0, 0]
    """
    if currents.dim() < 2:
        raise SpecError(
            f"quartz_first_spikes: currents must be time-first (T, B, *), got shape "
            f"{tuple(currents.shape)}"
        )
    rect = spec.rectify if rectify is None else rectify
    steps = currents.shape[0]
    read = spec.read_step
    cumulative = torch.cumsum(currents, dim=0)
    i = cumulative.clone()
    if steps > read:
        i[read:] = 1.0 + (cumulative[read:] - cumulative[read])
    v = torch.cumsum(i, dim=0)
    crossing = v >= spec.threshold
    crossing[: spec.first_fire_step] = False
    if rect and steps > spec.rectify_step:
        crossing[spec.rectify_step :] = True
    first = crossing & (torch.cumsum(crossing.to(torch.int64), dim=0) == 1)
    spikes = first.to(currents.dtype)
    fired = first.any(dim=0)
    last_v = v[-1]
    zero = torch.zeros_like(last_v)
    state = QuartzState(
        v=torch.where(fired, zero, last_v),
        i=torch.where(fired, zero, i[-1]),
        t=torch.full(last_v.shape, steps, dtype=torch.int64, device=currents.device),
        fired=fired,
    )
    return spikes, state
