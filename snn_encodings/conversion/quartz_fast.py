r"""Loop-free forward pass of a converted Quartz network: fire times from a few value passes.

Every Quartz neuron spikes at most once per window, so a layer's spike trains are fully given
by one fire time per neuron. With input levels :math:`n_j` (spike step :math:`s_j = 2K - n_j`)
the membrane before the readout is

.. math::
    v_t = \sum_j w_j\,(t + 1 - s_j)_+ + \mathrm{sign}(n_b)\,(t + 1 - s_b)_+, \qquad t < 2K,

so :math:`v_{2K-1} = Kz` (one pass of the layer on the levels), and a neuron that does not
cross :math:`\theta` before the readout fires :math:`\max(0, \lceil\theta - 1 - Kz\rceil)` steps
after :math:`2K` (no input arrives after :math:`2K`). Since :math:`0 \le (t + 1 - s_j)_+ \le
n_j`, :math:`v_t \le \sum_j w_j^+ n_j + n_b^+ = \tfrac12(Kz - n_b + |W| n) + n_b^+`, one pass
with the absolute weights; only images where that bound reaches :math:`\theta` get the exact
trajectory (one pass per step from their first input to :math:`2K - 1`). In exact mode no
neuron fires before the readout, so each layer costs a single pass.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from snn_encodings.conversion.exactness import SplitSynapse
from snn_encodings.conversion.graph import WEIGHTED
from snn_encodings.conversion.rules.base import FastPass, constant_like
from snn_encodings.conversion.synapse import Synapse, apply_gain, apply_in_chunks
from snn_encodings.functional.channels import channel_view
from snn_encodings.specs.quartz import Quartz

if TYPE_CHECKING:
    from snn_encodings.conversion.network import SpikingNetwork

__all__ = [
    "quartz_bias_levels",
    "quartz_fast_forward",
    "quartz_layer_levels",
    "quartz_quantise_bias",
]


def quartz_bias_levels(bias: Tensor, spec: Quartz) -> Tensor:
    r"""The bias in level units, :math:`n_b = Kb`: what it adds to the membrane at the readout.

    ``bias_coding="weight"``: one spike of weight :math:`b` at step :math:`K` (an input of
    value 1); :math:`b` is on the weights' grid :math:`2^{-q}` after
    :func:`quartz_quantise_bias`, so :math:`Kb` is exact. ``"time"``: one spike of weight
    :math:`\mathrm{sign}(n_b)` at step :math:`2K - |n_b|` (an input of value :math:`|b|` on a
    weight of :math:`\pm 1`, as in Quartz-on-Loihi's bias relay neurons), with
    :math:`n_b = \mathrm{clip}(\mathrm{round}(Kb), -2K, 2K)` an integer, so the spike stays
    inside the window.
    """
    k = spec.t_max
    if spec.bias_coding == "weight":
        return bias * k
    return torch.round(bias * k).clamp(-2 * k, 2 * k)


def quartz_quantise_bias(bias: Tensor, spec: Quartz) -> Tensor:
    r"""A normalised bias as the network holds it: on the weights' grid :math:`2^{-q}`
    (``bias_coding="weight"``) or on :math:`1/K` within :math:`[-2, 2]` (``"time"``)."""
    if spec.bias_coding == "weight":
        grid = float(2**spec.weight_frac_bits)
        return torch.round(bias * grid) / grid
    return quartz_bias_levels(bias, spec) / spec.t_max


def quartz_layer_levels(synapse: Synapse, levels: list[Tensor], spec: Quartz) -> Tensor:
    r"""The membrane at the readout minus one, :math:`Kz = \sum_j w_j n_j + n_b`, ``(B, *)``.

    ``levels`` are the integer levels :math:`n_j = K x_j` of every value node so far. Working
    in level units keeps every term a product of integers, grid weights and grid gains: the sum
    is exact in float64 (see :func:`~snn_encodings.conversion.exactness.check_exact`)
    whatever the grid of the branch (a product of gains, chained convolutions, a power-of-two
    average pooling), where the value units :math:`n/K` would carry rounding for other
    :math:`K`.
    """
    high = synapse.high if isinstance(synapse, SplitSynapse) else synapse
    bias_levels = quartz_bias_levels(cast(Tensor, high.bias), spec).to(levels[0].dtype)
    return _weighted_sum(synapse, levels).add_(bias_levels)


def _weighted_sum(
    synapse: nn.Module, levels: list[Tensor], wide: torch.dtype | None = None
) -> Tensor:
    """Bias-free sum of ``synapse`` on ``levels`` in its dtype (a float32 copy, or the two
    float32 parts of a :class:`SplitSynapse` added), returned in ``wide`` (default: the
    levels' dtype)."""
    parts = [synapse.high, synapse.low] if isinstance(synapse, SplitSynapse) else [synapse]
    wide = levels[0].dtype if wide is None else wide
    total: Tensor | None = None
    for part in parts:
        dtype = part.bias.dtype
        sources = set(part.sources)
        inputs = [n.to(dtype) if i in sources else n for i, n in enumerate(levels)]
        out = _apply(part, list(part.ops), inputs, absolute=False).to(wide)
        total = out if total is None else total.add_(out)
    assert total is not None
    return total


def _apply(
    synapse: Synapse, ops_list: list[nn.Module], levels: list[Tensor], absolute: bool
) -> Tensor:
    """Bias-free synapse on per-node tensors ``(B, *)`` (absolute gains when ``absolute``)."""
    total: Tensor | None = None
    for i, (source, ops) in enumerate(zip(synapse.sources, ops_list)):
        g_in, g_out = synapse.gains(i)
        if absolute:
            g_in, g_out = g_in.abs(), g_out.abs()
        out = apply_in_chunks(ops, apply_gain(levels[source], g_in))
        out = apply_gain(out, channel_view(g_out, out.dim() - 1))
        total = out if total is None else total + out
    assert total is not None
    return total


def _absolute_ops(synapse: Synapse) -> list[nn.Module]:
    """Copies of the synapse's branch ops with absolute weights (made per call, so that weights
    changed in place are never stale)."""
    ops_list = []
    for ops in synapse.ops:
        ops = copy.deepcopy(ops)
        with torch.no_grad():
            for op in ops.modules():
                if isinstance(op, WEIGHTED):
                    op.weight.abs_()
        ops_list.append(ops)
    return ops_list


def _bias_ramp(bias_levels: Tensor, d: int, spec: Quartz) -> Tensor:
    r"""What the bias relay has added to the membrane :math:`d + 1` steps before the readout:
    :math:`b\,(K - d)_+` (weight :math:`b` since step :math:`K`) or
    :math:`\mathrm{sign}(n_b)(|n_b| - d)_+` (weight :math:`\pm 1` since step :math:`2K - |n_b|`),
    never more than :math:`n_b^+`."""
    if spec.bias_coding == "weight":
        return bias_levels / spec.t_max * max(spec.t_max - d, 0)
    return torch.sign(bias_levels) * (bias_levels.abs() - d).clamp(min=0)


def _early_times(
    synapse: Synapse, levels: list[Tensor], bias_levels: Tensor, drive: Tensor, spec: Quartz
) -> tuple[Tensor, Tensor]:
    r"""Early-spike mask and fire times :math:`t < 2K` (``(B, *)``; :math:`2K` where none).

    With :math:`d = 2K - 1 - t` and the weight part :math:`V(d) = \sum_j w_j (n_j - d)_+`:
    :math:`V(d) \le U (1 - d/N)_+` (convexity of :math:`(n - d)_+`, :math:`U = \sum_j w_j^+ n_j`,
    :math:`N` the image's largest level) and :math:`V(d) = Kz_w - \sum_j w_j \min(n_j, d) \le
    Kz_w + d \sum_j w_j^- [n_j > 0]`. The membrane is computed exactly only at the steps and
    images where the smaller bound plus the bias ramp reaches :math:`\theta`.
    """
    k2 = spec.read_step
    absolute = _absolute_ops(synapse)
    ops_list = list(synapse.ops)
    positive = (drive + _apply(synapse, absolute, levels, absolute=True)) / 2
    arrived = [(n > 0).to(n.dtype) for n in levels]
    negative = (
        _apply(synapse, absolute, arrived, absolute=True)
        - _apply(synapse, ops_list, arrived, absolute=False)
    ) / 2
    top = torch.stack([n.flatten(1).amax(1) for n in levels]).amax(0).clamp(min=1)
    top = top.view(-1, *([1] * (drive.dim() - 1)))
    # steps d where min(rising, falling) + n_b^+ can reach theta: an interval [low, high]
    # per neuron (bounds rounded outwards), then per image the union over its neurons
    level = spec.threshold - 0.25 - bias_levels.clamp(min=0)
    never = float(k2)
    rise = torch.where(negative > 0, torch.floor((level - drive) / negative), never)
    low = torch.where(drive >= level, 0.0, rise).clamp(min=0)
    fall = torch.ceil(top * (1 - level / positive.clamp(min=1e-300)))
    high = torch.where(level <= 0, never - 1, torch.where(positive > 0, fall, -1.0))
    high = high.clamp(max=k2 - 1)
    valid = (low <= high).flatten(1)
    batch = drive.shape[0]
    marks = torch.zeros((batch, k2 + 1), dtype=drive.dtype, device=drive.device)
    ones = valid.to(drive.dtype)
    marks.scatter_add_(1, low.flatten(1).clamp(max=k2).to(torch.int64), ones)
    marks.scatter_add_(1, (high.flatten(1) + 1).clamp(min=0, max=k2).to(torch.int64), -ones)
    active = marks.cumsum(1)[:, :k2] > 0.5
    flagged = [(d, active[:, d].nonzero().flatten()) for d in range(k2)]
    flagged = [(d, rows) for d, rows in flagged if rows.numel()]
    fire = torch.full(drive.shape, k2, dtype=torch.int64, device=drive.device)
    # smallest d (latest step) first: the last overwrite is the earliest crossing
    for d, rows in flagged:
        every = rows.numel() == batch
        ramps = [(n if every else n[rows]) - d for n in levels]
        v = _apply(synapse, ops_list, [r.clamp_(min=0) for r in ramps], absolute=False)
        v = v + _bias_ramp(bias_levels, d, spec)
        crossed = v >= spec.threshold
        if every:
            fire.masked_fill_(crossed, k2 - 1 - d)
        else:
            fire[rows] = fire[rows].masked_fill_(crossed, k2 - 1 - d)
    return fire < k2, fire


def _narrow_drive(
    network: SpikingNetwork, index: int, levels: list[Tensor], wide: torch.dtype
) -> Tensor:
    """Bias-free sum of stage ``index`` on the levels, as ``network.narrow_synapse`` evaluates
    it: float32 where that is exact (and then kept in float32), else in ``wide``."""
    narrow = network.exact_dtypes()[index] == torch.float32
    return _weighted_sum(network.narrow_synapse(index), levels, torch.float32 if narrow else wide)


def quartz_fast_forward(network: SpikingNetwork, x: Tensor) -> FastPass:
    """Fire times of every layer of a converted Quartz ``network`` on checked inputs ``x``.

    Equal to simulating the window with ``QuartzLayer``: same decoded outputs, same spike
    counts per neuron, and the same ``QuartzLayer`` counters (``neurons``, ``spikes``,
    ``early_spikes``, ``last_early``, ``last_state``).
    """
    spec = network.spec
    assert isinstance(spec, Quartz)
    k = spec.t_max
    k2, k3, k4 = spec.read_step, spec.rectify_step, spec.steps_per_layer
    # [input values], or [raw input (never read again), float first layer's values]
    start = network.first_values(x)
    # integer levels in [-2K, 2K] are exact in float32: each layer's sum then reads them as
    # they are, and only sums that float32 cannot hold are formed in x's dtype
    levels = [torch.round(value * k).float() for value in start]
    fired = [torch.ones_like(value, dtype=torch.bool) for value in start]
    if network.float_first:
        fired[0] = torch.zeros_like(fired[0])  # the raw input sends no spikes
    output: Tensor | None = None
    for index, stage in enumerate(network.stages):
        if index < len(start) - 1:
            continue
        if stage.kind == "pool":
            source, pool = cast(int, stage.source), cast(nn.Module, stage.pool)
            pooled = pool(torch.where(fired[source], levels[source], -1.0))
            levels.append(pooled.clamp(min=0))
            fired.append(pooled >= 0)
            continue
        synapse, neurons = cast(Synapse, stage.synapse), cast(nn.Module, stage.neurons)
        drive = _narrow_drive(network, index, levels, x.dtype)
        bias_levels = quartz_bias_levels(cast(Tensor, synapse.bias), spec).to(drive.dtype)
        if spec.mode == "paper":
            wide = [n.to(x.dtype) for n in levels]
            early, times = _early_times(
                synapse, wide, bias_levels.to(x.dtype), drive.to(x.dtype), spec
            )
        kz = drive.add_(bias_levels)
        if spec.mode == "exact" and neurons.rectify:
            # a hidden exact layer: nobody fires early and everybody by the rectifier step, so
            # each neuron waits clip(ceil(theta - 1 - Kz), 0, K) steps after the readout and
            # its level is K minus that wait (the general path below, in five passes)
            wait = torch.ceil_(spec.threshold - 1 - kz).clamp_(0, k)
            everyone = constant_like(kz, True, torch.bool)
            neurons.neurons += kz.numel()
            neurons.spikes += kz.numel()
            neurons.last_early = constant_like(kz, False, torch.bool)
            neurons.defer_state(kz, everyone, x.dtype)
            levels.append(wait.neg_().add_(k).float())
            fired.append(everyone)
            continue
        # fire step: 2K plus the steps until the ramp Kz + 1 + s reaches theta
        fire = torch.ceil_(spec.threshold - 1 - kz).clamp_(min=0).add_(k2)
        if neurons.rectify:
            fire.clamp_(max=k3)
        if spec.mode == "paper":
            fire = torch.where(early, times.to(fire.dtype), fire)
        else:
            early = constant_like(kz, False, torch.bool)
        spiked = fire < k4
        every = neurons.rectify or bool(spiked.all())
        neurons.neurons += kz.numel()
        neurons.spikes += kz.numel() if every else int(spiked.sum().item())
        neurons.early_spikes += int(early.sum().item()) if spec.mode == "paper" else 0
        neurons.last_early = early
        neurons.defer_state(kz, spiked, x.dtype)
        step = fire.sub_(k).clamp_(min=0)  # the output's step, K earlier (layer_latency)
        if stage.kind == "output":
            output = (k2 - step.to(x.dtype).clamp(max=k3)) / k
        level = step.neg_().add_(k2).float()
        levels.append(level if every else level.masked_fill_(~spiked, 0.0))
        fired.append(spiked)
    assert output is not None
    return FastPass(output=output, spikes=fired)
