"""``convert``: the shared ANN-to-SNN pipeline (trace, fold, calibrate, normalise, build)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from snn_encodings.collective import Collective, Distributed, use_collective
from snn_encodings.conversion.calibrate import (
    PERCENTILE_CANDIDATES,
    ActivationStats,
    ScaleChoice,
    ScaleSearch,
    iterate_inputs,
    search_samples,
)
from snn_encodings.conversion.graph import GraphNode, clip_activation, clip_scale, trace
from snn_encodings.conversion.network import SpikingNetwork, Stage
from snn_encodings.conversion.output import OutputCalibration, output_range
from snn_encodings.conversion.rules.base import rule_for
from snn_encodings.conversion.synapse import Synapse
from snn_encodings.errors import ConversionError
from snn_encodings.specs.base import Spec

__all__ = ["AUTO", "DEFAULT", "convert"]

DEFAULT: Any = "default"
"""Marker for "the encoding's own default" (e.g. Quartz's 98.5th percentile)."""

AUTO: Any = "auto"
"""Marker for "search per layer" (the default of ``percentile`` and ``per_channel``)."""


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
            values.append(clip_activation(z, node.clip))
    return values


def convert(
    ann: nn.Module,
    spec: Spec,
    calibration: Iterable[Any],
    *,
    percentile: float | None | str = "auto",
    per_channel: bool | str = "auto",
    device: str | torch.device | None = None,
    distributed: Distributed = False,
) -> SpikingNetwork:
    r"""Convert a trained ANN into a spiking network for the encoding ``spec``.

    Steps: trace the model (torch.fx) into spiking layers fed by linear branches; fold
    BatchNorm into the preceding Conv/Linear and drop Dropout; calibrate each activation's scale
    :math:`\lambda_l` on ``calibration`` (streaming: maximum, or a histogram percentile, per layer
    or per channel, by default chosen per layer as the candidate whose twin activation is
    closest to the ANN's, see :class:`~snn_encodings.conversion.calibrate.ScaleSearch`; a
    clipping activation such as ReLU6 or :class:`ClipQuant` gives its bound directly); normalise (:math:`W_l \leftarrow W_l \lambda_{l-1}/\lambda_l`,
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
        calibration: an iterable of input batches or ``(input, target)`` pairs read several
            times: a DataLoader or a list (a map-style Dataset, which yields single samples, is
            refused).
        percentile: ``"auto"`` (default): per layer, the best of
            :data:`~snn_encodings.conversion.calibrate.PERCENTILE_CANDIDATES` and the encoding's
            own percentile, scored on the first 512 calibration samples (fewer for large
            networks, :func:`~snn_encodings.conversion.calibrate.search_samples`; no extra pass
            over the data; the choice shows in each stage's repr as ``calibration=``). Otherwise the
            percentile (0-100] of activations used as every scale, ``None`` for the maximum,
            ``DEFAULT`` for the encoding's own choice (e.g. Quartz's ``spec.percentile``).
        per_channel: ``True``: one scale per channel; ``False``: one per layer; ``"auto"``
            (default): searched with ``percentile="auto"``, else per layer.
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
    if per_channel is not AUTO and not isinstance(per_channel, bool):
        raise ConversionError(
            f"convert: per_channel must be True, False or 'auto', got {per_channel!r}"
        )
    if (
        percentile is not AUTO
        and percentile is not None
        and not (isinstance(percentile, (int, float)) and 0 < percentile <= 100)
    ):
        raise ConversionError(
            f"convert: percentile must be 'auto', in (0, 100] or None, got {percentile!r}"
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
    output = OutputCalibration(output_range(rule))
    float_first = bool(getattr(spec, "float_first_layer", False))
    searched, choices = _calibrate(
        nodes,
        (shapes, raw, output),
        calibration,
        (device, collective),
        (rule, percentile, per_channel),
    )
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
        scale = searched[i]
        bias = node.bias + output.offset.to(node.bias) if i == len(nodes) - 1 else node.bias
        synapse = Synapse(node.branches, bias, scales, scale, shapes)
        if float_first and not stages:
            synapse.to(rule.dtype)  # computed in float on the raw input: no parameter grid
        else:
            rule.quantise_layer(
                synapse, hidden=node.kind == "neuron", levels=node.levels, shift=node.shift
            )
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
        stages[-1].calibration = choices.get(i)
    network = SpikingNetwork(
        spec, stages, scales[-1], tuple(example.shape[1:]), output_offset=output.offset
    )
    network = network.to(device=device, dtype=rule.dtype).eval()
    with use_collective(collective):
        network.rule.finalize(network, calibration)
    return network


KEEP_ELEMENTS = 2**26
"""Calibration values (all batches, all neuron and output nodes) that ``convert`` keeps from
its first pass to fill the histograms without running the ANN again: 256 MiB of float32. A
larger calibration set streams the data a second time."""


def _calibrate(
    nodes: list[GraphNode],
    measured: tuple[list[torch.Size], list[Synapse | None], OutputCalibration],
    calibration: Iterable[Any],
    where: tuple[torch.device, Collective],
    how: tuple[Any, Any, Any],
) -> tuple[dict[int, Tensor], dict[int, ScaleChoice]]:
    """Scale of every neuron/output node, and the choice made for it (the calibration step).

    Streams the calibration data once for the maxima; the histograms (when a percentile is
    used or searched) need the maxima first, so they take a second pass, over the values the
    first pass kept when they fit :data:`KEEP_ELEMENTS`, else over the data again. With
    ``percentile="auto"`` the first pass also keeps every
    node's float value on the first :func:`search_samples` inputs, on which
    :class:`ScaleSearch` then picks each layer's candidate.
    ``measured`` holds the feature shapes, the unnormalised synapses (``_value_shapes``) and
    the output layer's offset calibration, which lifts negative logits (``output.offset`` is
    fixed after the first pass, and the output layer is scored with it added).
    """
    shapes, raw, output = measured
    device, collective = where
    rule, percentile, per_channel = how
    search = percentile is AUTO
    if search:
        grains = [False, True] if per_channel is AUTO else [bool(per_channel)]
        levels = list(dict.fromkeys((*PERCENTILE_CANDIDATES, rule.calibration_percentile())))
    else:
        grains, levels = [per_channel is True], [percentile]
    stats = {
        i: {
            grain: ActivationStats(per_channel=grain and nodes[i].kind == "neuron")
            for grain in ({*grains, False} if search else set(grains))
        }
        for i in range(1, len(nodes))
        if nodes[i].kind != "pool"
    }
    last = len(nodes) - 1
    limit = search_samples(shapes)
    kept: list[list[Tensor]] = []
    passes = 1 if levels == [None] else 2

    def observe(values: dict[int, Tensor], first_pass: bool) -> None:
        for i, collectors in stats.items():
            observed = (
                output.observed(values[i], first_pass=first_pass)
                if i == last
                else values[i].clamp(min=0)
            )
            for collector in collectors.values():
                if first_pass:
                    collector.update_max(observed)
                else:
                    collector.update_histogram(observed)

    collectors = [c for node_stats in stats.values() for c in node_stats.values()]
    stored: list[dict[int, Tensor]] | None = [] if passes == 2 else None
    held = 0
    with torch.no_grad():
        for x in iterate_inputs(calibration, "convert"):
            values = _raw_values(nodes, raw, x.to(device))
            missing = limit - sum(len(k[0]) for k in kept)
            if search and missing > 0:
                kept.append([value[:missing] for value in values])
            observed = {i: values[i] for i in stats}
            observe(observed, first_pass=True)
            if stored is not None:
                held += sum(value.numel() for value in observed.values())
                if held <= KEEP_ELEMENTS:
                    stored.append(observed)
                else:
                    stored = None  # too many to keep: the histograms stream the data again
        collective.merge_stats(collectors, "max")
        for collector in stats[last].values():
            collector.maximum = output.finish_first_pass(collective.max, collector.maximum)
        if passes == 2:
            again = (
                stored
                if stored is not None
                else (
                    dict(enumerate(_raw_values(nodes, raw, x.to(device))))
                    for x in iterate_inputs(calibration, "convert")
                )
            )
            for observed in again:
                observe(observed, first_pass=False)
            collective.merge_stats(collectors, "histogram")
        if not search:
            return _fixed_scales(nodes, stats, percentile, grains[0]), {}
        reference = [torch.cat(parts) for parts in zip(*kept)]
        reference[last] = reference[last] + output.offset.to(reference[last])
        shifted = dataclasses.replace(
            nodes[last], bias=nodes[last].bias + output.offset.to(nodes[last].bias)
        )
        float_first = bool(getattr(rule.spec, "float_first_layer", False))
        candidates = [(level, grain) for grain in grains for level in levels]
        searcher = ScaleSearch(
            rule, candidates, float_first, collective.sum, positive_output=output.kind == "bounded"
        )
        return searcher.choose([*nodes[:last], shifted], stats, reference, shapes)


def _fixed_scales(
    nodes: list[GraphNode],
    stats: dict[int, dict[bool, ActivationStats]],
    percentile: float | None,
    per_channel: bool,
) -> dict[int, Tensor]:
    """Every node's scale at one given percentile (a clipping activation's bound where set)."""
    return {
        i: clip_scale(nodes[i].clip)
        if nodes[i].clip is not None
        else collectors[per_channel].scale(percentile)
        for i, collectors in stats.items()
    }


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
