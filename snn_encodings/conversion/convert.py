"""``convert``: the shared ANN-to-SNN pipeline (trace, fold, calibrate, normalise, build)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from snn_encodings.conversion.calibrate import ActivationStats, iterate_inputs
from snn_encodings.conversion.graph import GraphNode, trace
from snn_encodings.conversion.network import SpikingNetwork, Stage
from snn_encodings.conversion.output import OutputCalibration, output_range
from snn_encodings.conversion.rules.base import rule_for
from snn_encodings.conversion.synapse import Synapse
from snn_encodings.collective import Collective, Distributed, use_collective
from snn_encodings.errors import ConversionError
from snn_encodings.specs.base import Spec

__all__ = ["DEFAULT", "convert"]

DEFAULT: Any = "default"
"""Marker for "the encoding's own default" (e.g. Quartz's 98.5th percentile)."""


def _check_parameters(ann: nn.Module) -> None:
    for name, tensor in list(ann.named_parameters()) + list(ann.named_buffers()):
        if tensor.is_meta:
            raise ConversionError(
                f"convert: parameter {name!r} is on the meta device and holds no values; load "
                "the trained weights (e.g. model.to_empty(device='cpu') then load_state_dict)"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConversionError(
                f"convert: parameter {name!r} contains NaN or inf; fix or retrain the model"
            )


def _raw_values(nodes: list[GraphNode], synapses: list[Synapse | None], x: Tensor) -> list[Tensor]:
    values = [x]
    for node, synapse in zip(nodes[1:], synapses):
        if node.kind == "pool":
            values.append(node.pool(values[node.branches[0].source]))
            continue
        z = synapse.value(values)
        if node.kind == "output":
            values.append(z)
        else:
            values.append(z.clamp(min=0) if node.clip is None else z.clamp(0, node.clip))
    return values


def convert(
    ann: nn.Module,
    spec: Spec,
    calibration: Iterable[Any],
    *,
    percentile: float | None = DEFAULT,
    per_channel: bool = False,
    device: str | torch.device | None = None,
    distributed: Distributed = False,
) -> SpikingNetwork:
    r"""Convert a trained ANN into a spiking network for the encoding ``spec``.

    Steps: trace the model (torch.fx) into spiking layers fed by linear branches; fold
    BatchNorm into the preceding Conv/Linear and drop Dropout; calibrate each activation's scale
    :math:`\lambda_l` on ``calibration`` (streaming: maximum, or a histogram percentile, per layer
    or per channel; a clipping activation such as ReLU6 or :class:`ClipQuant` gives its bound
    directly); normalise (:math:`W_l \leftarrow W_l \lambda_{l-1}/\lambda_l`,
    :math:`b_l \leftarrow b_l/\lambda_l`, Lenz et al.'s bias-corrected rule); build the
    encoding's neuron layers; run the encoding's finishing step (e.g. IC-SNN's data-based
    initial membranes). The user's model is never modified. With ``float_first_layer``
    (Quartz) the first layer keeps float parameters and runs on the raw input (see
    :class:`SpikingNetwork`).

    Args:
        ann: a trained ``nn.Module`` of Conv1d/2d, Linear, BatchNorm, ReLU (or ReLU6, Hardtanh(0, M),
            :class:`ClipQuant`), AvgPool, MaxPool, Flatten, Dropout and additions; the last
            operation must be a Conv/Linear (the logits).
        spec: the encoding, e.g. ``ICRate(steps=16)``.
        calibration: an iterable of input batches or ``(input, target)`` pairs.
        percentile: percentile (0-100] of activations used as the scale; ``None`` for the
            maximum; by default the encoding's own choice.
        per_channel: one scale per channel instead of per layer.
        device: where to run calibration and the network (default: the model's device).
        distributed: ``True`` (or a process group) to calibrate on this process's shard of the
            data and merge with the other processes (see :mod:`snn_encodings.distributed`);
            every process of the group must call ``convert`` with the same model and get the
            same network back. Opt-in: an initialised process group alone changes nothing.
    Returns:
        The :class:`SpikingNetwork`, in eval mode.
    Raises:
        ConversionError: for unsupported layers (named), NaN/inf weights, an empty loader,
            or inputs that do not fit the model; with ``distributed``, also for a missing process
            group or models that differ between processes (in structure or in weight values).
        TypeError: if ``spec`` is not a neuron spec or ``ann`` not a module.
    """
    if not isinstance(ann, nn.Module):
        raise TypeError(f"convert: expected a torch.nn.Module, got {type(ann).__name__}")
    if isinstance(ann, SpikingNetwork):
        raise ConversionError("convert: the model is already a converted SpikingNetwork")
    rule = rule_for(spec)
    _check_parameters(ann)
    if iter(calibration) is calibration:
        raise ConversionError(
            f"convert: the calibration data is a one-shot iterator ({type(calibration).__name__}), "
            "but calibration reads it several times; pass a list of batches or a DataLoader"
        )
    if percentile is DEFAULT:
        percentile = rule.calibration_percentile()
    if percentile is not None and not (
        isinstance(percentile, (int, float)) and 0 < percentile <= 100
    ):
        raise ConversionError(
            f"convert: percentile must be in (0, 100] or None, got {percentile!r}"
        )
    if device is None:
        first = next(iter(ann.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "meta":
        raise ConversionError("convert: device='meta' holds no values; use 'cpu' or 'cuda'")

    collective = Collective.resolve(distributed, "convert")
    example = collective.agree(
        lambda: next(iter(iterate_inputs(calibration, "convert"))), "convert"
    ).to(device)
    try:
        nodes = trace(ann, example[:2])
    except RuntimeError as error:
        raise ConversionError(
            f"convert: the calibration inputs do not fit the model: {error}"
        ) from None
    collective.check_same(_graph_key(nodes, example, spec, percentile, per_channel), "convert")
    collective.check_same_weights(ann, "convert")

    shapes, raw = _value_shapes(nodes, example[:1])
    stats = {
        i: ActivationStats(per_channel=per_channel and nodes[i].kind == "neuron")
        for i in range(1, len(nodes))
        if nodes[i].kind != "pool"
    }
    passes = 1 if percentile is None else 2
    output = OutputCalibration(output_range(rule))
    last = len(nodes) - 1
    with torch.no_grad():
        for index in range(passes):
            for x in iterate_inputs(calibration, "convert"):
                values = _raw_values(nodes, raw, x.to(device))
                for i, collector in stats.items():
                    observed = (
                        output.observed(values[i], first_pass=index == 0)
                        if i == last
                        else values[i].clamp(min=0)
                    )
                    if index == 0:
                        collector.update_max(observed)
                    else:
                        collector.update_histogram(observed)
            collective.merge_stats(stats.values(), "max" if index == 0 else "histogram")
            if index == 0:
                stats[last].maximum = output.finish_first_pass(collective.max, stats[last].maximum)

    float_first = bool(getattr(spec, "float_first_layer", False))
    scales: list[Tensor] = [torch.ones(())]
    stages: list[Stage] = []
    for i, node in enumerate(nodes[1:], start=1):
        shape = tuple(shapes[i])
        if node.kind == "pool":
            scales.append(scales[node.branches[0].source])
            stages.append(
                Stage(
                    "pool", node.name, pool=node.pool, source=node.branches[0].source, shape=shape
                )
            )
            continue
        scale = (
            torch.tensor(float(node.clip)) if node.clip is not None else stats[i].scale(percentile)
        )
        bias = node.bias + output.offset.to(node.bias) if i == last else node.bias
        synapse = Synapse(node.branches, bias, scales, scale, shapes)
        if float_first and not stages:
            synapse.to(rule.dtype)  # computed in float on the raw input: no parameter grid
        else:
            rule.quantise_synapse(synapse)
        scales.append(scale)
        stages.append(
            Stage(
                node.kind,
                node.name,
                synapse=synapse,
                neurons=rule.neuron_layer(output=node.kind == "output"),
                shape=shape,
            )
        )
    network = SpikingNetwork(
        spec, stages, scales[-1], tuple(example.shape[1:]), output_offset=output.offset
    )
    network = network.to(device=device, dtype=rule.dtype).eval()
    with use_collective(collective):
        network.rule.finalize(network, calibration)
    return network


def _graph_key(
    nodes: list[GraphNode], example: Tensor, spec: Spec, percentile: float | None, per_channel: bool
) -> str:
    """What must agree between processes converting together: arguments, layers, shapes."""
    parts = [repr(spec), repr(percentile), repr(per_channel), repr(tuple(example.shape[1:]))]
    for node in nodes:
        bias = None if node.bias is None else tuple(node.bias.shape)
        parts.append(
            f"{node.kind}:{node.name}:{node.clip}:{node.levels}:{node.shift}:{bias}:{node.pool!r}"
        )
        for branch in node.branches:
            shapes = [tuple(p.shape) for op in branch.ops for p in op.parameters()]
            parts.append(f"{branch.source}:{branch.ops!r}:{shapes}")
    return "\n".join(parts)


def _value_shapes(
    nodes: list[GraphNode], x: Tensor
) -> tuple[list[torch.Size], list[Synapse | None]]:
    """Feature shape of every value node from one sample, and the unnormalised synapses (unit
    scales) built on the way, which calibration reuses (``None`` for pools)."""
    one = torch.ones(())
    shapes = [torch.Size(x.shape[1:])]
    synapses: list[Synapse | None] = []
    values = [x]
    with torch.no_grad():
        for node in nodes[1:]:
            if node.kind == "pool":
                synapses.append(None)
                values.append(node.pool(values[node.branches[0].source]))
            else:
                synapse = Synapse(node.branches, node.bias, [one] * len(nodes), one, shapes)
                synapses.append(synapse)
                values.append(synapse.value(values))
            shapes.append(torch.Size(values[-1].shape[1:]))
    return shapes, synapses
