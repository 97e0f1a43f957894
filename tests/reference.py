r"""An independent reference for the converted networks' twins, built from the user's own modules.

The library's :meth:`SpikingNetwork.twin` evaluates the converted graph: the SNN's own folded,
normalised and quantised synapses. A bug in calibration, normalisation, bias handling or
quantisation would be in both the SNN and its twin, and "SNN == twin" would not see it.

:class:`ReferenceTwin` shares none of that code. It deep-copies the user's ANN (BatchNorm,
Dropout and all, in eval mode), calibrates its own scales with forward hooks (the maximum of
every ReLU's output, as ``convert(..., percentile=None)`` does), and applies each encoding's
activation, written here from the papers' formulas, with forward hooks on the original ReLUs:

- radix (exact mode): :math:`\lambda\,\mathrm{clip}(\lfloor r^T z/\lambda + 1/2\rfloor, 0,
  r^T - 1) / r^T` (the conversion shifts hidden biases by half a level), inputs floored onto
  the same grid;
- IC-rate: :math:`\lambda\,\mathrm{clip}(\lfloor T z/\lambda + v_0/\theta \rfloor / T, 0, 1)`
  with the spec's default :math:`v_0` (``init="ann"``), analog inputs;
- Quartz (exact mode, ``rounding="round"``): :math:`\lambda\,\mathrm{clip}(\lfloor K z/\lambda
  + 1/2\rfloor, 0, K)/K`, inputs on the grid :math:`1/K`.

The output layer is hooked too: compensated IC-rate and radix return the logits; Quartz clips
them to :math:`[-\lambda, \lambda]` on its grid and uncompensated IC-rate to
:math:`[0, \lambda]`, after the offset :math:`c = \max(0, -\min_b \max_k z_{bk})`.

Parameter grids: radix rounds its normalised weights and biases
(:math:`W \lambda_{in}/\lambda_{out}`, :math:`b/\lambda_{out}`) to :math:`2^{-k}`, Quartz its
weights to :math:`2^{-q}` and its biases to the same grid (to :math:`1/K` within
:math:`[-2, 2]` with ``bias_coding="time"``). The reference
folds BatchNorm into the preceding layer itself (eval statistics) and rounds the same normalised
values, so it agrees with the converted network to float rounding; a value within rounding of a
level boundary may still land on the neighbouring level.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from snn_encodings.specs import ICRate, Quartz, Radix, Spec

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _fold(layer: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold eval-mode BatchNorm into ``layer`` in place and make ``norm`` the identity."""
    gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    layer.weight.mul_(gain.view(-1, *([1] * (layer.weight.dim() - 1))))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(norm.running_mean)
    layer.bias = nn.Parameter((bias - norm.running_mean) * gain + norm.bias)
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0 - norm.eps)
    norm.weight.fill_(1.0)
    norm.bias.zero_()


class ReferenceTwin:
    """The encoding's quantised ANN, from a deep copy of ``ann`` with forward hooks.

    Args:
        ann: the user's trained ANN (not modified): ReLU activations, last weighted layer gives
            the logits.
        spec: a radix (exact), IC-rate (``init="ann"``, analog input) or Quartz (exact, round)
            spec.
        calibration: input batches ``(B, *)``.
    """

    def __init__(self, ann: nn.Module, spec: Spec, calibration: Iterable[Tensor]) -> None:
        self.spec = spec
        self.model = copy.deepcopy(ann).eval().double()
        self.relus = [m for m in self.model.modules() if isinstance(m, nn.ReLU)]
        self.output = [m for m in self.model.modules() if isinstance(m, _WEIGHTED)][-1]
        self.scales = [0.0] * len(self.relus)
        self.offset = 0.0
        self.output_scale = 0.0
        self._calibrate([x.double() for x in calibration])
        self._round_parameters()
        for index, relu in enumerate(self.relus):
            relu.register_forward_hook(self._hidden_hook(index))
        self.output.register_forward_hook(self._output_hook)

    # --- calibration -------------------------------------------------------------------------
    def _calibrate(self, batches: list[Tensor]) -> None:
        lowest_top = math.inf
        tops: list[Tensor] = []

        def record(index: int) -> Any:
            def hook(module: nn.Module, args: Any, out: Tensor) -> None:
                self.scales[index] = max(self.scales[index], float(out.max()))

            return hook

        handles = [r.register_forward_hook(record(i)) for i, r in enumerate(self.relus)]
        with torch.no_grad():
            for x in batches:
                logits = self.model(x)
                lowest_top = min(lowest_top, float(logits.flatten(1).amax(1).min()))
                tops.append(logits)
        for handle in handles:
            handle.remove()
        self.scales = [s if s > 0 else 1.0 for s in self.scales]
        if self._bounded_output():
            self.offset = max(0.0, -lowest_top)
        peak = max(float((t + self.offset).max()) for t in tops)
        self.output_scale = peak if peak > 0 else 1.0

    def _round_parameters(self) -> None:
        """Fold BatchNorm, then put normalised weights and biases on the encoding's grids."""
        modules = [m for m in self.model.modules() if not list(m.children())]
        scale_in = 1.0
        relus = iter(self.scales)
        with torch.no_grad():
            for index, module in enumerate(modules):
                if isinstance(module, nn.ReLU):
                    scale_in = next(relus)
                if not isinstance(module, _WEIGHTED):
                    continue
                following = modules[index + 1] if index + 1 < len(modules) else None
                if isinstance(following, nn.modules.batchnorm._BatchNorm):
                    _fold(module, following)
                last = module is self.output
                scale_out = self.output_scale if last else self.scales[self._relu_after(module)]
                offset = self.offset if last else 0.0
                weight = self._weight_grid(module.weight * scale_in / scale_out)
                bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
                module.weight.copy_(weight * scale_out / scale_in)
                module.bias = nn.Parameter(
                    self._bias_grid((bias + offset) / scale_out) * scale_out - offset
                )

    def _relu_after(self, module: nn.Module) -> int:
        order = [m for m in self.model.modules() if not list(m.children())]
        position = order.index(module)
        return self.relus.index(next(m for m in order[position:] if isinstance(m, nn.ReLU)))

    def _weight_grid(self, weight: Tensor) -> Tensor:
        bits = {Radix: "weight_bits", Quartz: "weight_frac_bits"}.get(type(self.spec))
        if bits is None:
            return weight
        unit = 2.0 ** getattr(self.spec, bits)
        return torch.round(weight * unit) / unit

    def _bias_grid(self, bias: Tensor) -> Tensor:
        if isinstance(self.spec, Quartz) and self.spec.bias_coding == "time":
            return (torch.round(bias * self.spec.t_max) / self.spec.t_max).clamp(-2, 2)
        return self._weight_grid(bias)

    def _bounded_output(self) -> bool:
        return isinstance(self.spec, Quartz) or (
            isinstance(self.spec, ICRate) and not self.spec.compensate
        )

    # --- activations ---------------------------------------------------------------------------
    def hidden(self, z: Tensor) -> Tensor:
        """The encoding's activation on normalised pre-activations ``z`` (threshold units)."""
        spec = self.spec
        if isinstance(spec, Radix):  # exact mode: rounded to the nearest level (halves up)
            levels = spec.base**spec.steps
            return torch.floor(z * levels + 0.5).clamp(0, levels - 1) / levels
        if isinstance(spec, ICRate):
            shift = spec.default_v0 / spec.threshold
            return (torch.floor(z * spec.steps + shift) / spec.steps).clamp(0, 1)
        if isinstance(spec, Quartz):
            return torch.floor(z * spec.t_max + 0.5).clamp(0, spec.t_max) / spec.t_max
        raise TypeError(f"no reference for {spec!r}")

    def output_value(self, z: Tensor) -> Tensor:
        """The output layer's decoded value on normalised logits ``z``."""
        spec = self.spec
        if isinstance(spec, Quartz):
            return torch.floor(z * spec.t_max + 0.5).clamp(-spec.t_max, spec.t_max) / spec.t_max
        if isinstance(spec, ICRate) and not spec.compensate:
            return z.clamp(0, 1)
        return z

    def input_value(self, x: Tensor) -> Tensor:
        """The value the encoded input represents."""
        spec = self.spec
        if isinstance(spec, Radix):  # the encoder floors
            levels = spec.base**spec.steps
            return torch.floor(x.clamp(0, 1 - 1 / levels) * levels) / levels
        if isinstance(spec, Quartz):
            return torch.floor(x * spec.t_max + 0.5).clamp(0, spec.t_max) / spec.t_max
        return x

    def _hidden_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            scale = self.scales[index]
            return self.hidden(args[0] / scale) * scale

        return hook

    def _output_hook(self, module: nn.Module, args: Any, out: Tensor) -> Tensor:
        scale = self.output_scale
        return self.output_value((out + self.offset) / scale) * scale - self.offset

    # --- evaluation ----------------------------------------------------------------------------
    def __call__(self, x: Tensor) -> Tensor:
        """Reference outputs ``(B, K)`` in logit units (float64)."""
        with torch.no_grad():
            return self.model(self.input_value(x.double()))

    def first_layer(self, x: Tensor) -> Tensor:
        """The first hidden layer's normalised activation (threshold units), ``(B, *)``."""
        seen: list[Tensor] = []

        def keep(module: nn.Module, args: Any, out: Tensor) -> None:
            seen.append(out / self.scales[0])

        handle = self.relus[0].register_forward_hook(keep)
        try:
            self(x)
        finally:
            handle.remove()
        return seen[0]
