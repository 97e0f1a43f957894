"""Radix neurons: the exact MSB-first neuron, the paper's LSB-first neuron, and the ANN twin."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from snn_encodings.errors import SpecError
from snn_encodings.functional.grid import grid_index, grid_quantise, grid_value
from snn_encodings.functional.surrogate import Surrogate, spike
from snn_encodings.specs.radix import Radix

__all__ = [
    "RadixState",
    "radix_digit_thresholds",
    "radix_initial_state",
    "radix_step",
    "radix_twin",
    "radix_twin_parameters",
    "snap_to_grid",
]


class RadixState(NamedTuple):
    """State of radix neurons, every field shaped ``(B, *)``.

    Attributes:
        v: membrane. Exact mode: the value still to be emitted as output digits, in units of the
            output's least significant digit :math:`r^{-T}`. Paper mode: the membrane in the
            frame of the current digit (one unit = the digit being emitted).
        acc: exact mode: the input window integrated so far (Horner's rule), same units as ``v``;
            zero in paper mode.
        k: integer step counter (steps since the state was created).
    """

    v: Tensor
    acc: Tensor
    k: Tensor


def radix_initial_state(
    spec: Radix, like: Tensor, *, v0: float | Tensor | None = None
) -> RadixState:
    r"""Create the initial state: membranes at ``v0`` (default 0), counter at 0.

    Args:
        spec: encoding parameters.
        like: a tensor of the layer's shape ``(B, *)``; gives shape, dtype and device.
        v0: initial membrane ``v`` (scalar or broadcastable tensor); default 0.
    Returns:
        The state, every field of shape ``like.shape``; ``k`` is ``torch.int64``.
    Example:
        >>> radix_initial_state(Radix(steps=3), torch.zeros(2)).k.tolist()
        [0, 0]
    """
    zeros = torch.zeros_like(like)
    v = zeros if v0 is None else zeros + torch.as_tensor(v0, dtype=like.dtype, device=like.device)
    return RadixState(
        v=v, acc=zeros, k=torch.zeros(like.shape, dtype=torch.int64, device=like.device)
    )


def radix_digit_thresholds(spec: Radix, like: Tensor) -> Tensor:
    r"""Exact mode's digit thresholds :math:`r^{T-1-j}` for digits :math:`j = 0, \dots, T-1`.

    They are in units of the output's least significant digit :math:`r^{-T}` (the units of
    ``RadixState.v``); digit :math:`j` of a window compares the membrane with entry :math:`j`.

    Args:
        spec: encoding parameters (``steps`` :math:`T`, ``base`` :math:`r`).
        like: gives dtype and device.
    Returns:
        Shape ``(T,)``, dtype and device of ``like``; each power rounded to that dtype (in
        float16, powers above 65504 become ``inf``).
    Example:
        >>> radix_digit_thresholds(Radix(steps=3), torch.zeros(1)).tolist()
        [4.0, 2.0, 1.0]
    """
    return torch.tensor(
        [float(spec.base ** (spec.steps - 1 - j)) for j in range(spec.steps)],
        dtype=like.dtype,
        device=like.device,
    )


def _require_radix_setting(spec: Radix, where: str) -> None:
    if not spec.is_radix_setting:
        raise SpecError(
            f"{where}: the radix neuron computes base-{spec.base} arithmetic only with "
            f"leak = threshold = 1/base, got leak={spec.leak_factor:g}, "
            f"threshold={spec.normalised_threshold:g}; other (leak, threshold) pairs are for "
            f"the encoder (coding.radix.radix_expansion)"
        )


def radix_step(
    current: Tensor, state: RadixState, spec: Radix, /, *, surrogate: Surrogate | None = None
) -> tuple[Tensor, RadixState]:
    r"""Advance radix neurons by one time step (``spec.mode`` selects the neuron).

    Write :math:`r` = ``spec.base``, :math:`T` = ``spec.steps``, :math:`m = r - 1` sub-steps per
    digit, :math:`L = Tm` steps per window. Step :math:`n` (counter ``k``) has window position
    :math:`p = n \bmod L`, digit :math:`j = \lfloor p/m \rfloor` and sub-step :math:`q = p \bmod m`.

    **Exact mode** (MSB first, pipelined by one window). The input window is integrated with
    Horner's rule while the previous window's value is emitted greedily, MSB first:

    .. math::
        a \leftarrow r^{[q = 0]}\, a + I_n, \qquad
        s_n = H\!\left(v - r^{T-1-j}\right), \qquad v \leftarrow v - r^{T-1-j} s_n,

    and at the end of a window (:math:`p = L - 1`) :math:`v \leftarrow a,\ a \leftarrow 0`.
    :math:`a` = ``acc`` and :math:`v` are in units of :math:`r^{-T}`. After a window,
    :math:`v = r^T z` with :math:`z = \sum_j r^{-(j+1)} \sum_q I_{j,q}` (digit :math:`j` weighs
    :math:`r^{-(j+1)}`), and the next window's spikes are the digits of
    :math:`\lfloor \mathrm{clip}(z, 0, 1 - r^{-T}) \rfloor_T` exactly: a negative :math:`v`
    never fires (ReLU), :math:`v \ge r^T` fires every sub-step (saturation). This is the
    phased MSB-first neuron; the paper's Algorithm 1 is the ``paper`` mode.

    **Paper mode** (LSB first; Wang et al., Algorithm 1 as Figure 4 traces it). Integrate, fire
    on the least significant digit of the membrane against the threshold, refractory
    subtraction, leak at the end of each digit:

    .. math::
        v \leftarrow v + I_n, \qquad
        s_n = H\!\left(v - 1\right) H\!\left((\lfloor v \rfloor \bmod r) - \theta_n r\right),
        \qquad v \leftarrow v - s_n, \qquad v \leftarrow \alpha^{[q = m-1]}\, v,

    with :math:`\alpha = \theta_n = 1/r`; :math:`v` is in units of the current digit. The
    gate :math:`v \ge 1` keeps negative membranes silent. With integer currents (weights with
    :math:`D` fractional digits, scaled by :math:`r^D`) the spike train is the base-:math:`r`
    expansion of the accumulated integer, least significant digit first; it is the
    exact-mode result after dropping :math:`D` digits only if :math:`D \ge T`, intermediate
    sums do not go negative before the gate sees them, and overflow is saturated by the layer
    (see :class:`snn_encodings.conversion.rules.radix.RadixRule`).

    Legend: :math:`I_n` input current, :math:`s_n` spike, :math:`H(x) = [x \ge 0]`, time in
    steps, values in the units above.

    Args:
        current: input at this step, shape ``(B, *)``.
        state: from :func:`radix_initial_state` or the previous step, fields shaped like
            ``current``.
        spec: encoding parameters (``leak`` and ``threshold`` must be :math:`1/r`).
        surrogate: gradient stand-in for the Heaviside (spike values stay exact).
    Returns:
        ``(spikes, new_state)``: spikes in ``{0, 1}``, shape and dtype of ``current``.
    Raises:
        SpecError: if ``current`` and ``state.v`` differ in shape, or leak/threshold are not
            :math:`1/r`.
    Example:
        Figure 4 of the paper: weight 2 times input '101' (LSB first: 1, 0, 1), one extra step.

        >>> spec = Radix(steps=3, mode="paper")
        >>> state = radix_initial_state(spec, torch.zeros(1))
        >>> out = []
        >>> for current in [2.0, 0.0, 2.0, 0.0]:
        ...     s, state = radix_step(torch.tensor([current]), state, spec)
        ...     out.append(int(s))
        >>> out  # LSB first: '1010' = 10
        [0, 1, 0, 1]
    """
    if current.shape != state.v.shape:
        raise SpecError(
            f"radix_step: current has shape {tuple(current.shape)} but the state has "
            f"{tuple(state.v.shape)}; reset the state when the input shape changes"
        )
    _require_radix_setting(spec, "radix_step")
    base, substeps, window = spec.base, spec.substeps, spec.steps_per_layer
    position = state.k % window
    sub_step = position % substeps
    if spec.mode == "paper":
        v = state.v + current
        lsd = torch.remainder(torch.floor(v.detach()), base)
        drive = torch.minimum(v - 1, lsd - spec.normalised_threshold * base)
        spikes = spike(drive, surrogate)
        v = v - spikes.detach()
        v = torch.where(sub_step == substeps - 1, v * spec.leak_factor, v)
        return spikes, RadixState(v=v, acc=state.acc, k=state.k + 1)

    digit = position // substeps
    threshold = radix_digit_thresholds(spec, current)[digit]
    acc = torch.where(sub_step == 0, state.acc * base, state.acc) + current
    # relative to the digit's threshold: same sign, surrogate sees O(1) values at every digit
    spikes = spike((state.v - threshold) / threshold, surrogate)
    v = state.v - threshold * spikes.detach()
    window_end = position == window - 1
    v = torch.where(window_end, acc, v)
    acc = torch.where(window_end, torch.zeros_like(acc), acc)
    return spikes, RadixState(v=v, acc=acc, k=state.k + 1)


# --- ANN twin -------------------------------------------------------------------------------
def radix_twin_parameters(spec: Radix) -> tuple[int, float]:
    r"""``(levels, shift)`` of the twin :math:`y = \mathrm{clip}(\lfloor z\,\ell + s\rfloor, 0,
    \ell - 1)/\ell`: :math:`\ell = r^T` levels, shift :math:`s = 0` (floor, as the neurons).

    Example:
        >>> radix_twin_parameters(Radix(steps=4))
        (16, 0.0)
    """
    return spec.levels, 0.0


def snap_to_grid(u: Tensor, bits: int) -> Tensor:
    r"""Round ``u`` to the nearest multiple of :math:`2^{-\text{bits}}` (float rounding repair).

    When the exact value of ``u`` lies on that grid (as :math:`r^T z` does after
    :meth:`~snn_encodings.conversion.rules.radix.RadixRule.quantise_synapse`), this undoes the
    rounding of a float computation that summed in another order.

    Example:
        >>> snap_to_grid(torch.tensor([2.9999999999, 0.1250000001], dtype=torch.float64), 3).tolist()
        [3.0, 0.125]
    """
    scale = float(2**bits)
    return torch.round(u * scale) / scale


class _FloorClipSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, levels: int, snap_bits: int | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        if snap_bits is None:
            return grid_quantise(z, levels, low=0, high=levels - 1)
        # the snapped value is a float multiple of 2^-snap_bits: a grid of one level per unit
        n = grid_index(snap_to_grid(z * levels, snap_bits), 1, low=0, high=levels - 1)
        return torch.where(torch.isnan(z), z, grid_value(n, levels, z.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        inside = (z >= 0) & (z < 1)
        return grad * inside.to(grad.dtype), None, None


def radix_twin(z: Tensor, spec: Radix, *, snap_bits: int | None = None) -> Tensor:
    r"""The ANN twin of a radix layer: the floor-quantised clipped ReLU on the :math:`r^{-T}` grid.

    .. math::
        y = \frac{\mathrm{clip}\!\left(\lfloor r^T z \rfloor,\ 0,\ r^T - 1\right)}{r^T}
          = \lfloor \mathrm{clip}(z, 0, 1 - r^{-T}) \rfloor_T,
        \qquad \frac{\partial y}{\partial z} := [0 \le z < 1]

    (straight-through gradient inside :math:`[0, 1)`, zero outside). :math:`z` is the
    normalised pre-activation (threshold units: 1 is the layer's scale :math:`\lambda`).

    Args:
        z: pre-activations, any shape, floating point.
        spec: encoding parameters (``steps``, ``base``).
        snap_bits: if given, :math:`r^T z` is first snapped to the grid
            :math:`2^{-\text{snap\_bits}}` (see :func:`snap_to_grid`), so that float rounding
            of :math:`z` cannot move a value across a floor boundary. Conversion uses it.
    Returns:
        ``y``, shape and dtype of ``z``, on the grid :math:`r^{-T}\mathbb{Z} \cap [0, 1)`.
    Example:
        >>> radix_twin(torch.tensor([-0.3, 0.3, 0.99, 1.5]), Radix(steps=2)).tolist()
        [0.0, 0.25, 0.75, 0.75]
    """
    return _FloorClipSTE.apply(z, spec.levels, snap_bits)
