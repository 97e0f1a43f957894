"""``evaluate``: accuracy, spikes and synaptic operations of a converted network on a loader."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from snn_encodings.collective import Collective, Distributed, structure_key
from snn_encodings.conversion.network import LayerCounts, SpikingNetwork
from snn_encodings.distributed import check_eval_loader
from snn_encodings.errors import ConversionError, SnnEncodingsError, SnnEncodingsWarning

__all__ = ["SATURATION_WARNING", "Evaluation", "class_indices", "evaluate", "with_steps"]

SATURATION_WARNING = 0.05
"""The fraction of a layer's values at the top of its range above which :func:`evaluate` warns
(once per call). Calibration puts 0.01 % (IC-rate, 99.99th percentile) to 1.5 % (Quartz,
98.5th) of in-distribution activations there; inputs larger than the calibration data push
far more values to the ceiling, where every larger value decodes the same."""


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    Attributes:
        accuracy: fraction of correct predictions (argmax of the outputs).
        correct, samples: the counts behind it.
        spikes_per_sample: spikes of all layers (input included) per sample (SNNs only).
        synaptic_events_per_sample: synaptic operations per sample (SNNs only).
        layers: per-layer :class:`LayerCounts` (SNNs only).
        steps: the encoding's window length; latency: steps from first input to the output
            window's end (SNNs only).
        saturation: per layer (as ``layers``), the fraction of its values (samples times
            neurons) at the top of the range the encoding represents, where larger values are
            clipped: inputs beyond the input encoding's range (0 for an analog input), hidden
            activations at the twin's ceiling, outputs at a bounded output's ceiling (SNNs
            only; see :data:`SATURATION_WARNING`).
    """

    accuracy: float
    correct: int
    samples: int
    spikes_per_sample: float | None = None
    synaptic_events_per_sample: float | None = None
    layers: list[LayerCounts] = field(default_factory=list)
    steps: int | None = None
    latency: int | None = None
    saturation: list[float] = field(default_factory=list)


def with_steps(network: SpikingNetwork, steps: int) -> SpikingNetwork:
    """A copy of ``network`` whose spec has ``steps`` time steps (for specs with a ``steps`` field).

    The copy keeps every weight and per-layer buffer (such as measured initial membranes).
    """
    if not any(f.name == "steps" for f in dataclasses.fields(network.spec)):
        raise ConversionError(
            f"evaluate: {type(network.spec).__name__} has no 'steps' field; convert again with the "
            "spec you want"
        )
    spec = dataclasses.replace(network.spec, steps=steps)
    stages = copy.deepcopy(list(network.stages))
    clone = SpikingNetwork(
        spec,
        stages,
        network.output_scale,
        network.input_shape,
        output_offset=network.output_offset,
    )
    for stage in clone.stages:
        if stage.neurons is not None:
            fresh = clone.rule.neuron_layer(output=stage.kind == "output")
            for name, buffer in stage.neurons.named_buffers(recurse=False):
                setattr(fresh, name, buffer.clone())
            stage.neurons = fresh
    return clone.to(network.output_scale.device).eval()


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    steps: int | None = None,
    twin: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    distributed: Distributed = False,
) -> Evaluation:
    """Classification accuracy of ``model`` on ``loader``, with spike and operation counts.

    Args:
        model: a :class:`SpikingNetwork` from :func:`convert`, or any ANN returning logits.
        loader: iterable of ``(input, target)`` batches.
        steps: evaluate a copy of the SNN with this many time steps (specs with ``steps``).
        twin: evaluate the SNN's ANN twin instead of simulating it.
        device: where to run (default: the model's device).
        progress: show a tqdm progress bar (on rank 0 only when distributed).
        distributed: ``True`` (or a process group): ``loader`` yields this process's shard
            (see :func:`snn_encodings.distributed.shard_loader`) and the counts are summed over
            the processes; every process returns the same, global result.
    Returns:
        An :class:`Evaluation`.
    Raises:
        ConversionError: for batches without targets, mismatched shapes, or an empty loader;
            with ``distributed``, also for a missing process group, models that differ between
            processes (in structure or weights), or a loader whose ``DistributedSampler`` pads or
            drops samples.
    """
    collective = Collective.resolve(distributed, "evaluate")
    is_snn = isinstance(model, SpikingNetwork)
    if steps is not None:
        if not is_snn:
            raise ConversionError("evaluate: steps= applies to converted SpikingNetworks only")
        model = with_steps(model, steps)
    if collective.enabled:
        check_eval_loader(loader)
        collective.check_same(structure_key(model), "evaluate")
        collective.check_same_weights(model, "evaluate")
        progress = progress and collective.rank == 0
    if device is None:
        device = _device_of(model)
    if torch.device(device).type == "meta":
        raise ConversionError(
            "evaluate: the model (or device=) is on the meta device, which holds no values; "
            "load the trained weights on 'cpu' or 'cuda' first"
        )
    was_training = model.training
    model.eval()
    correct = 0
    samples = 0
    bounds: list[float | None] = []
    if is_snn:
        model.reset_counts()
        model.counting = not twin
        bounds = _saturation_bounds(model)
        for layer in model.counts:
            layer.extra["saturated"] = 0.0
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ConversionError("evaluate: the loader must yield (input, target) batches")
                x, target = batch[0].to(device), batch[1].to(device)
                out = model.twin(x) if (is_snn and twin) else model(x)
                target = class_indices(target, out)
                correct += int((out.argmax(1) == target).sum())
                samples += len(target)
                if is_snn and not twin:
                    _add_saturation(model, x, bounds)
    finally:
        if is_snn:
            model.counting = False
        model.train(was_training)
    correct, samples = collective.merge_evaluation(
        correct, samples, model.counts if is_snn and not twin else []
    )
    if samples == 0:
        raise ConversionError("evaluate: the loader yielded no data")
    result = Evaluation(accuracy=correct / samples, correct=correct, samples=samples)
    if is_snn and not twin:
        _add_network_counts(result, model)
    return result


def _add_network_counts(result: Evaluation, network: SpikingNetwork) -> None:
    """Fill the SNN-only fields of ``result`` from ``network.counts``; warn on saturation."""
    counts = network.counts
    result.layers = [dataclasses.replace(c) for c in counts]
    result.spikes_per_sample = sum(c.spikes for c in counts) / result.samples
    result.synaptic_events_per_sample = sum(c.synaptic_events for c in counts) / result.samples
    result.steps = network.spec.steps_per_layer
    result.latency = network.latency
    result.saturation = [c.extra["saturated"] / max(1, c.neurons * c.samples) for c in counts]
    _warn_saturation(result)


def class_indices(target: Tensor, out: Tensor) -> Tensor:
    """Targets of a batch as class indices ``(B,)``, for outputs ``out`` ``(B, K)``.

    ``(B, 1)`` is flattened; one-hot ``(B, K)`` and any other shape are refused, as is a length
    other than ``B`` (comparing would broadcast to ``(B, B)`` and miscount).

    Raises:
        ConversionError: naming the shapes and what to pass instead.
    """
    if out.dim() != 2:
        raise ConversionError(
            f"evaluate: the model must return (B, classes) outputs, got shape {tuple(out.shape)}"
        )
    if target.dim() == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.dim() != 1:
        raise ConversionError(
            f"evaluate: targets must be class indices of shape (B,), got shape "
            f"{tuple(target.shape)}; for one-hot labels pass target.argmax(1)"
        )
    if len(target) != len(out):
        raise ConversionError(
            f"evaluate: the batch has {len(out)} inputs but {len(target)} targets; the loader "
            "must yield one target per input"
        )
    return target


def _saturation_bounds(network: SpikingNetwork) -> list[float | None]:
    """Per node, the value at or above which it counts as saturated (``None``: never).

    The input saturates above the encoding's top level plus one grid step (beyond that the
    encoding clips); neuron and bounded output stages at their twin's ceiling.
    """
    rule = network.rule
    huge = torch.tensor([1e30], dtype=torch.float64)
    levels, _, upper = rule.twin_parameters()
    try:
        top = float(rule.decode_input(huge.to(network.output_scale.dtype)))
    except SnnEncodingsError:  # an encoding that refuses out-of-range inputs never clips them
        top = float("inf")
    beyond = top + (1.0 / levels if levels else 0.0)
    bounds: list[float | None] = [None if network.float_first or top > 1e6 else beyond]
    for stage in network.stages:
        if stage.kind == "pool":
            bounds.append(None)
            continue
        ceiling = float((rule.twin_output if stage.kind == "output" else rule.twin)(huge))
        bounds.append(None if ceiling > 1e6 else ceiling)
    return bounds


def _add_saturation(network: SpikingNetwork, x: Tensor, bounds: list[float | None]) -> None:
    """Add the batch's saturated values per node to ``network.counts[i].extra["saturated"]``."""
    values = network.activations(x)
    values[0] = x  # the raw input: the encoding clips what lies beyond its range
    for index, (value, bound) in enumerate(zip(values, bounds)):
        if bound is None:
            continue
        hits = value > bound if index == 0 else value >= bound
        network.counts[index].extra["saturated"] += float(hits.sum())


def _warn_saturation(result: Evaluation) -> None:
    worst = max(range(len(result.saturation)), key=result.saturation.__getitem__)
    if result.saturation[worst] > SATURATION_WARNING:
        warnings.warn(
            f"evaluate: {100 * result.saturation[worst]:.1f} % of layer "
            f"{result.layers[worst].name!r}'s values are at the top of the encoding's range "
            f"(warning above {100 * SATURATION_WARNING:g} %): the inputs are larger than the "
            "calibration data, so larger values all decode alike; calibrate on data like "
            "these inputs, or scale the inputs to the calibration range",
            SnnEncodingsWarning,
            stacklevel=4,  # the caller of evaluate
        )


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")
