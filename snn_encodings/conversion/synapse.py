"""Synapses of a converted network: sums of linear branches with folded normalisation scales."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from snn_encodings.conversion.graph import WEIGHTED, Branch
from snn_encodings.errors import ConversionError
from snn_encodings.functional.channels import channel_view

__all__ = ["CHUNK_ELEMENTS", "Synapse", "apply_gain", "apply_in_chunks"]

CHUNK_ELEMENTS = 2**19
"""Input entries per call of a synapse's ops: a batch of samples (or time steps times samples)
larger than this goes through in slices, which keeps a convolution's working set in cache
(on a CPU, one call on 16 000 spike maps took 2-3 times as long as the same maps in slices)."""


def apply_in_chunks(ops: nn.Module, x: Tensor) -> Tensor:
    """``ops(x)`` for a batch ``x`` ``(N, *)``, computed in slices of at most
    :data:`CHUNK_ELEMENTS` input entries along the first dimension (same values: every op
    treats samples independently)."""
    per_sample = max(1, x[0].numel()) if len(x) else 1
    rows = max(1, CHUNK_ELEMENTS // per_sample)
    if len(x) <= rows:
        return ops(x)
    return _stacked(x.split(rows), ops)


def _stacked(parts: Sequence[Tensor], fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` of every part, joined along the first dimension into one tensor allocated once
    (filled part by part: no second copy, as ``torch.cat`` of the results would make)."""
    first = fn(parts[0])
    if len(parts) == 1:
        return first
    out = first.new_empty((sum(len(part) for part in parts), *first.shape[1:]))
    out[: len(first)] = first
    start = len(first)
    del first
    for part in parts[1:]:
        out[start : start + len(part)] = fn(part)
        start += len(part)
    return out


class Synapse(nn.Module):
    r"""The normalised pre-activation of one layer: :math:`z = \sum_b g_b\, \mathrm{ops}_b(g^{in}_b a_{s_b}) + \beta`.

    Normalisation (Rueckauer et al.; Lenz et al. Algorithm 1 in cumulative form) multiplies each
    source by its scale :math:`\lambda_{s}` and divides the sum by this layer's scale
    :math:`\lambda`. Where a branch has a Conv/Linear, the scales are folded into its weights
    (:math:`W \leftarrow W \lambda_{s} / \lambda`); otherwise they stay as the branch's gains.
    The bias map :math:`\beta = b / \lambda` is held separately, because each encoding injects
    it differently over time.

    Args:
        branches: the traced branches (ops without bias).
        bias: the traced bias map, one sample's feature shape.
        scales: the scale of every value node so far (scalar or per-channel tensors).
        scale: this layer's scale :math:`\lambda`.
        example_shapes: feature shape of every value node so far.
    """

    def __init__(
        self,
        branches: list[Branch],
        bias: Tensor,
        scales: list[Tensor],
        scale: Tensor,
        example_shapes: list[torch.Size],
    ) -> None:
        super().__init__()
        self.sources = [b.source for b in branches]
        self.ops = nn.ModuleList()
        in_gains = []
        out_gains = []
        for branch in branches:
            ops = [copy.deepcopy(op) for op in branch.ops]
            in_gain = scales[branch.source]
            out_gain = 1.0 / scale
            weighted = [i for i, op in enumerate(ops) if isinstance(op, WEIGHTED)]
            if weighted:
                first, last = weighted[0], weighted[-1]
                in_gain = self._fold_input(ops, first, in_gain, example_shapes[branch.source])
                if last == len(ops) - 1 or scale.dim() == 0:
                    self._fold_output(ops[last], out_gain)
                    out_gain = torch.ones(())
            self.ops.append(nn.Sequential(*ops))
            in_gains.append(channel_view(in_gain, len(example_shapes[branch.source])))
            out_gains.append(out_gain)
        for i, (g_in, g_out) in enumerate(zip(in_gains, out_gains)):
            self.register_buffer(f"in_gain_{i}", torch.as_tensor(g_in, dtype=torch.float32).clone())
            self.register_buffer(
                f"out_gain_{i}", torch.as_tensor(g_out, dtype=torch.float32).clone()
            )
        features = len(bias.shape)
        self.register_buffer("bias", (bias / channel_view(scale, features)).clone())

    @staticmethod
    def _fold_input(
        ops: list[nn.Module], first: int, in_gain: Tensor, source_shape: torch.Size
    ) -> Tensor:
        """Multiply the first weighted op's input columns by the source scale; return the rest."""
        op = ops[first]
        full = channel_view(in_gain, len(source_shape)).expand(source_shape).unsqueeze(0).clone()
        with torch.no_grad():
            mapped = nn.Sequential(*ops[:first])(full)[0]
            if isinstance(op, nn.Linear):
                if mapped.dim() != 1:
                    raise ConversionError(
                        "convert: a Linear layer must receive flattened (B, N) inputs"
                    )
                op.weight.mul_(mapped.view(1, -1))
            else:
                per_channel = mapped.flatten(1)[:, 0]
                if op.groups != 1 and not torch.all(per_channel == per_channel[0]):
                    raise ConversionError("convert: per-channel scales need groups=1 convolutions")
                if op.groups != 1:
                    op.weight.mul_(per_channel[0])
                else:
                    op.weight.mul_(per_channel.view(1, -1, *([1] * (op.weight.dim() - 2))))
        return torch.ones(())

    @staticmethod
    def _fold_output(op: nn.Module, out_gain: Tensor) -> None:
        with torch.no_grad():
            op.weight.mul_(channel_view(out_gain, op.weight.dim()))

    def gains(self, i: int) -> tuple[Tensor, Tensor]:
        """The input and output gains of branch ``i``."""
        return getattr(self, f"in_gain_{i}"), getattr(self, f"out_gain_{i}")

    def value(self, values: list[Tensor]) -> Tensor:
        """Pre-activation from the value nodes' activations ``(B, *)`` (ANN / twin mode)."""
        total = self.bias.unsqueeze(0)
        for i, (source, ops) in enumerate(zip(self.sources, self.ops)):
            g_in, g_out = self.gains(i)
            out = apply_in_chunks(ops, apply_gain(values[source], g_in))
            total = total + apply_gain(out, channel_view(g_out, out.dim() - 1))
        return total

    def drive(
        self,
        sequences: Sequence[Tensor | None] | Mapping[int, Tensor],
        *,
        event_driven: bool = True,
        steps_per_call: int | None = None,
    ) -> Tensor:
        """Bias-free input currents ``(T, B, *)`` from the value nodes' spike trains
        (``sequences[node]``: a list by node, ``None`` where no longer needed, or a mapping).

        A train that repeats one step (an expanded tensor, stride 0 in time, e.g. an analog
        input current) is pushed through the ops once. With ``event_driven`` only the time
        steps that carry input are pushed through the ops (worth its scan for sparse trains).
        Otherwise the ops take ``steps_per_call`` steps at a time (all at once for ``None``):
        a window driven whole and the same window driven in blocks of that many steps then
        make the same calls, so their rounding is the same too (a matrix product need not
        round a row alike in batches of different sizes).
        """
        total: Tensor | None = None
        for i, (source, ops) in enumerate(zip(self.sources, self.ops)):
            g_in, g_out = self.gains(i)
            seq = sequences[source]
            assert seq is not None, f"node {source}'s trains were released before a reader"
            steps, batch = seq.shape[:2]
            if seq.stride(0) == 0:
                out = apply_in_chunks(ops, apply_gain(seq[0], g_in))
                out = apply_gain(out, channel_view(g_out, out.dim() - 1)).expand(steps, *out.shape)
                total = _accumulate(total, out, sequences)
                continue
            active = (
                seq.reshape(steps, -1).any(1).nonzero().flatten()
                if event_driven
                else torch.arange(steps, device=seq.device)
            )
            if len(active) == steps:
                out = _every_step(ops, apply_gain(seq, g_in), steps_per_call)
            else:
                picked = apply_in_chunks(ops, apply_gain(seq[active], g_in).flatten(0, 1))
                picked = picked.unflatten(0, (len(active), batch))
                out = picked.new_zeros((steps, *picked.shape[1:])).index_copy(0, active, picked)
            gain = channel_view(g_out, out[0].dim() - 1)
            out = out.mul_(gain) if _owned(out, sequences) else apply_gain(out, gain)
            total = _accumulate(total, out, sequences)
        assert total is not None
        return total

    def synaptic_events(self, counts: list[Tensor]) -> Tensor:
        """Synaptic events caused by per-neuron spike counts ``(B, *)`` of the sources.

        Every spike reaching a weighted op counts once per post-synaptic neuron it reaches (its
        fan-out); average pooling before a weighted op is counted as part of that op's fan-in.
        Returns one number per sample, ``(B,)``.
        """
        reference = counts[self.sources[0]]
        total = torch.zeros(reference.shape[0], dtype=torch.float64, device=reference.device)
        for source, ops in zip(self.sources, self.ops):
            x = counts[source].to(torch.float64)
            for op in ops:
                if isinstance(op, WEIGHTED):
                    ones = copy.deepcopy(op).to(torch.float64)
                    with torch.no_grad():
                        ones.weight.fill_(1.0)
                    x = ones(x)
                elif isinstance(op, (nn.AvgPool1d, nn.AvgPool2d)):
                    size = (
                        op.kernel_size
                        if isinstance(op.kernel_size, tuple)
                        else (op.kernel_size,) * (x.dim() - 2)
                    )
                    x = op(x) * float(torch.tensor(size).prod())
                else:
                    x = op(x)
            total += x.flatten(1).sum(1)
        return total


def _every_step(ops: nn.Module, trains: Tensor, steps_per_call: int | None) -> Tensor:
    """``ops`` over every step of ``trains`` ``(T, B, *)`` -> ``(T, B, *)``, in calls of
    ``steps_per_call`` steps (each call in :func:`apply_in_chunks` slices)."""
    steps, batch = trains.shape[:2]
    return _stacked(
        trains.split(steps if steps_per_call is None else steps_per_call),
        lambda part: apply_in_chunks(ops, part.flatten(0, 1)).unflatten(0, (len(part), batch)),
    )


def _owned(x: Tensor, sources: Sequence[Tensor | None] | Mapping[int, Tensor]) -> bool:
    """Whether ``x`` may be written in place: a dense tensor (no repeated step) that shares no
    memory with the spike trains it was computed from (an identity branch returns its source).
    ``sources`` as ``drive`` takes them: a list by node, or a mapping node -> train."""
    if 0 in x.stride():
        return False
    storage = x.untyped_storage().data_ptr()
    trains = sources.values() if isinstance(sources, Mapping) else sources
    return all(s is None or s.untyped_storage().data_ptr() != storage for s in trains)


def _accumulate(
    total: Tensor | None, out: Tensor, sources: Sequence[Tensor | None] | Mapping[int, Tensor]
) -> Tensor:
    """``total + out`` (``out`` if there is no total yet), added into ``total`` where it may
    be written: the same sums, without a new ``(T, B, *)`` tensor per branch."""
    if total is None:
        return out
    return total.add_(out) if _owned(total, sources) else total + out


def apply_gain(x: Tensor, gain: Tensor) -> Tensor:
    """``x * gain``, skipped for a scalar gain of exactly 1 (the product would equal ``x``)."""
    if gain.dim() == 0 and bool(gain == 1):
        return x
    return x * gain
