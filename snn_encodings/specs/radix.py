"""The radix encoding (Wang, Gu, Goh, Zhou, Luo, IEEE TNNLS 2024; arXiv 2105.06943) spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from snn_encodings.errors import SpecError
from snn_encodings.specs.base import Spec, check_choice, check_float, check_int

__all__ = ["Radix"]

RadixMode = Literal["exact", "paper"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Radix(Spec):
    r"""Radix (base-:math:`r` fixed-point) spike coding: the spike at digit :math:`k` weighs
    :math:`r^{-k}`.

    A value :math:`x \in [0, 1)` is carried by its first :math:`T` base-:math:`r` digits,

    .. math::
        x \approx \hat x = \sum_{k=1}^{T} d_k\, r^{-k}, \qquad d_k \in \{0, \dots, r-1\},

    so :math:`T` steps give :math:`r^T` levels (the grid :math:`r^{-T}\mathbb{Z}`). Spikes stay
    binary: a digit :math:`d_k` is sent as :math:`d_k` spikes in the :math:`r - 1` sub-steps of
    its digit slot (for :math:`r = 2`, one step per digit). The window of a layer is therefore
    ``steps * (base - 1)`` time steps.

    Two neurons implement it (see :func:`snn_encodings.functional.radix.radix_step`):

    - ``mode="exact"`` (default): digits most-significant first; a layer integrates its whole
      input window (Horner's rule) and then emits its output digits greedily, MSB first. The
      decoded output equals :math:`\lfloor \mathrm{clip}(z, 0, 1 - r^{-T}) \rfloor_T` for every
      pre-activation :math:`z`, signs included. Latency: one window per layer.
    - ``mode="paper"``: the paper's Algorithm 1 as its worked examples pin it down (least
      significant digit first, fire on the membrane's least significant digit, refractory
      subtraction, leak by :math:`1/r`). Exact only when the synapses have at least :math:`T`
      fractional digits and overflow saturates; see the functional docs.

    The paper's hyper-parameters are the leak factor :math:`\alpha` and the normalised threshold
    :math:`\theta_n`, both in :math:`(0, 1]` (Section IV-B; the numeric bounds of its text are
    lost, these ranges are a reconstruction). Radix arithmetic is the setting
    :math:`\alpha = \theta_n = 1/r` (the "binary setting" for :math:`r = 2`); the neurons require
    it, while the encoder also runs the other settings for the paper's encoding-error study
    (:func:`snn_encodings.coding.radix.radix_expansion`). Rate coding is the corner
    :math:`\alpha = 1` (the paper's "point B").

    Args:
        steps: digits per value, :math:`T \ge 1`.
        base: radix :math:`r`, an integer ``>= 2``.
        leak: leak factor :math:`\alpha \in (0, 1]`; ``None`` means :math:`1/r`.
        threshold: normalised threshold :math:`\theta_n \in (0, 1]`; ``None`` means :math:`1/r`.
        mode: ``"exact"`` or ``"paper"``.
        weight_bits: fractional bits :math:`k` of the normalised weights and biases after
            conversion in exact mode (the dyadic grid :math:`2^{-k}\mathbb{Z}` that makes every
            float64 sum exact). The default 12 keeps most layers' sums exact in float32 too
            (about twice as fast on CPU, see ``docs/conversion.md``); Wang et al. quantise
            weights to 2-8 bits. Paper mode uses :math:`T` fractional digits instead.

    Raises:
        SpecError: for a field out of range, naming the field.

    Example:
        >>> spec = Radix(steps=4)
        >>> spec.levels, spec.steps_per_layer, spec.layer_latency
        (16, 4, 4)
        >>> Radix(steps=3, base=3).steps_per_layer
        6
    """

    steps: int = 6
    base: int = 2
    leak: float | None = None
    threshold: float | None = None
    mode: RadixMode = "exact"
    weight_bits: int = 12

    def __post_init__(self) -> None:
        check_int(self, "steps", minimum=1)
        check_int(self, "base", minimum=2)
        if self.leak is not None:
            check_float(self, "leak", positive=True, maximum=1.0)
        if self.threshold is not None:
            check_float(self, "threshold", positive=True, maximum=1.0)
        check_choice(self, "mode", ("exact", "paper"))
        check_int(self, "weight_bits", minimum=0, maximum=30)
        if self.levels > 2**40:
            raise SpecError(
                f"Radix.steps: base**steps must be <= 2**40 so that float64 arithmetic stays "
                f"exact, got {self.base}**{self.steps}; lower steps or base"
            )
        if self.mode == "exact" and self.levels * 2**self.weight_bits > 2**52:
            raise SpecError(
                f"Radix.steps: exact mode needs base**steps * 2**weight_bits <= 2**52 (the "
                f"membrane's grid must fit float64's 53-bit mantissa, else the SNN and its twin "
                f"round differently), got {self.base}**{self.steps} * 2**{self.weight_bits}; "
                f"lower steps or weight_bits (e.g. steps <= {52 - self.weight_bits} for base 2)"
            )

    # --- derived numbers ------------------------------------------------------------------
    @property
    def substeps(self) -> int:
        """Time steps per digit, :math:`r - 1` (one binary spike per sub-step)."""
        return self.base - 1

    @property
    def steps_per_layer(self) -> int:
        """Window length :math:`L = T (r - 1)` in time steps."""
        return self.steps * self.substeps

    @property
    def layer_latency(self) -> int:
        """One window: a layer's output digits start when its input window ends."""
        return self.steps_per_layer

    @property
    def levels(self) -> int:
        """Number of representable values, :math:`r^T`."""
        return int(self.base) ** int(self.steps)

    @property
    def resolution(self) -> float:
        """Grid step (one least-significant digit), :math:`r^{-T}`."""
        return 1.0 / self.levels

    @property
    def leak_factor(self) -> float:
        r""":math:`\alpha`: ``leak``, or :math:`1/r` when ``leak`` is ``None``."""
        return 1.0 / self.base if self.leak is None else float(self.leak)

    @property
    def normalised_threshold(self) -> float:
        r""":math:`\theta_n`: ``threshold``, or :math:`1/r` when ``threshold`` is ``None``."""
        return 1.0 / self.base if self.threshold is None else float(self.threshold)

    @property
    def is_radix_setting(self) -> bool:
        r"""Whether :math:`\alpha = \theta_n = 1/r`, the setting of exact base-:math:`r` digits."""
        target = 1.0 / self.base
        return math.isclose(self.leak_factor, target, rel_tol=0, abs_tol=1e-12) and math.isclose(
            self.normalised_threshold, target, rel_tol=0, abs_tol=1e-12
        )
