r"""How the output layer's scale is calibrated, so that negative logits survive conversion.

Hidden layers replace ReLUs, so their scale :math:`\lambda` is calibrated on the rectified
activation. The output layer replaces no ReLU: its logits :math:`z` are signed, and are often
mostly negative. What an encoding's output layer can represent (probed from its rule's
:meth:`~snn_encodings.conversion.Rule.twin_output`) decides how its scale is chosen:

- ``"unbounded"`` (radix, compensated IC-rate): the decoded output is :math:`z` itself (on the
  encoding's grid); the scale is calibrated on :math:`\max(z, 0)` as for hidden layers.
- ``"bounded"`` (Quartz, whose output covers :math:`[-\lambda, \lambda]`; IC-rate without
  compensation, which counts spikes and covers :math:`[0, \lambda]`): the logits are shifted by
  an offset :math:`c \ge 0` (added to the output layer's bias) that lifts every calibration
  sample's *largest* logit to at least 0, :math:`c = \max(0, -\min_b \max_k z_{bk})`, and the
  network subtracts it again after decoding: :math:`y = \lambda\,\mathrm{decode}(\ldots) - c`.
  The scale is calibrated on :math:`\max(z + c, 0)`. Adding one constant to every logit changes
  no argmax and no softmax; logits far below a sample's winner may still floor, but the winner
  itself is represented on the calibration data. A model whose every sample has a positive
  top logit gets :math:`c = 0`, the plain calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from snn_encodings.conversion.rules.base import Rule

__all__ = ["OutputCalibration", "OutputRange", "output_range"]

OutputRange = Literal["unbounded", "bounded"]


def output_range(rule: Rule) -> OutputRange:
    """What the rule's output layer can represent, in threshold units (see the module doc)."""
    high = float(rule.twin_output(torch.tensor([2.0], dtype=torch.float64))[0])
    return "bounded" if high < 2.0 else "unbounded"


class OutputCalibration:
    """Observes the output logits during calibration; gives the offset (see the module doc).

    Args:
        kind: :func:`output_range` of the encoding's rule.
    """

    def __init__(self, kind: OutputRange) -> None:
        self.kind = kind
        self.lowest_top = torch.tensor(float("inf"), dtype=torch.float64)
        self.offset = torch.zeros(())

    def observed(self, z: Tensor, first_pass: bool) -> Tensor:
        """The values the scale is calibrated on, for logits ``z`` ``(B, K, ...)``."""
        if self.kind == "unbounded":
            return z.clamp(min=0)
        if first_pass:
            top = z.flatten(1).amax(1).min().to("cpu", torch.float64)
            self.lowest_top = torch.minimum(self.lowest_top, top)
            return z.clamp(min=0)
        return (z + self.offset.to(z)).clamp(min=0)

    def finish_first_pass(self, merge_max: Callable[[Tensor], Tensor], maximum: Tensor) -> Tensor:
        r"""Fix the offset (``merge_max``: the maximum over processes); return the new maximum.

        ``maximum`` is the first pass's maximum of :math:`\max(z, 0)`; the second pass bins
        :math:`\max(z + c, 0)`, whose maximum is at most ``maximum + c``.
        """
        if self.kind != "bounded":
            return maximum
        lowest = -merge_max(-self.lowest_top.reshape(1))[0]
        if not torch.isfinite(lowest):
            return maximum
        self.offset = (-lowest).clamp(min=0).to(torch.float32)
        return maximum + self.offset.to(maximum)
