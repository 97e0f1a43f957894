"""``evaluate``: accuracy, spikes and synaptic operations of a converted network on a loader."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from snn_encodings.conversion.network import LayerCounts, SpikingNetwork
from snn_encodings.collective import Collective, Distributed, structure_key
from snn_encodings.distributed import check_eval_loader
from snn_encodings.errors import ConversionError

__all__ = ["Evaluation", "evaluate", "with_steps"]


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
    """

    accuracy: float
    correct: int
    samples: int
    spikes_per_sample: float | None = None
    synaptic_events_per_sample: float | None = None
    layers: list[LayerCounts] = field(default_factory=list)
    steps: int | None = None
    latency: int | None = None


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
    clone = SpikingNetwork(spec, stages, network.output_scale, network.input_shape)
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
            processes, or a loader whose ``DistributedSampler`` pads or drops samples.
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
        progress = progress and collective.rank == 0
    if device is None:
        device = _device_of(model)
    was_training = model.training
    model.eval()
    correct = 0
    samples = 0
    if is_snn:
        model.reset_counts()
        model.counting = not twin
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ConversionError("evaluate: the loader must yield (input, target) batches")
                x, target = batch[0].to(device), batch[1].to(device)
                out = model.twin(x) if (is_snn and twin) else model(x)
                correct += int((out.argmax(1) == target).sum())
                samples += len(target)
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
        result.layers = [dataclasses.replace(c) for c in model.counts]
        result.spikes_per_sample = sum(c.spikes for c in model.counts) / samples
        result.synaptic_events_per_sample = sum(c.synaptic_events for c in model.counts) / samples
        result.steps = model.spec.steps_per_layer
        result.latency = model.latency
    return result


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")
