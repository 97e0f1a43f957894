"""Quantisation-aware fine-tuning of an ANN with an encoding's twin activation."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from snn_encodings.conversion.calibrate import batch_input, iterate_inputs
from snn_encodings.conversion.convert import _calibrate, _value_shapes, convert
from snn_encodings.conversion.evaluate import class_indices
from snn_encodings.conversion.graph import trace
from snn_encodings.conversion.output import OutputCalibration, output_range
from snn_encodings.conversion.rules.base import rule_for
from snn_encodings.conversion.twin import ClipQuant
from snn_encodings.distributed import Collective, Distributed, shard_loader, wrap_ddp
from snn_encodings.errors import ConversionError
from snn_encodings.functional.channels import channel_view
from snn_encodings.specs.base import Spec

__all__ = ["FinetuneResult", "finetune", "with_twin_activations"]


def with_twin_activations(
    ann: nn.Module,
    spec: Spec,
    calibration: Iterable[Any],
    *,
    percentile: float | None | str = "auto",
    per_channel: bool | str = "auto",
    distributed: Distributed = False,
) -> nn.Module:
    r"""A copy of ``ann`` whose ReLUs are :class:`ClipQuant` twins of ``spec``, at the scales
    :func:`convert` chooses.

    Each ``nn.ReLU`` module becomes ``ClipQuant(scale=lambda, levels, shift, upper)`` with the
    encoding's grid (:meth:`Rule.twin_parameters`) and :math:`\lambda` the scale that
    :func:`convert` gives that layer with the same ``calibration``, ``percentile`` and
    ``per_channel`` (by default searched per layer among percentiles, per layer or per channel:
    :class:`~snn_encodings.conversion.calibrate.ScaleSearch`), so converting the copy gives the
    hidden layers :func:`convert` gives for ``ann`` (the output layer, which replaces no ReLU,
    is calibrated again). A per-channel scale is a ``(C,)`` bound. A ReLU
    module called at several places gets the largest of their scales (elementwise where they
    have the same shape, else one per layer). ``ann`` is not modified. With ``distributed``,
    the statistics of every process's shard are merged as in :func:`convert`.

    Raises:
        ConversionError: if ``ann`` has no ``nn.ReLU`` modules, the loader is empty, or
            ``convert`` refuses the model.
    """
    return _twin_model(ann, spec, calibration, (percentile, per_channel), distributed)[0]


def _twin_model(
    ann: nn.Module,
    spec: Spec,
    calibration: Iterable[Any],
    how: tuple[Any, Any],
    distributed: Distributed,
) -> tuple[nn.Module, _OutputTwin]:
    """:func:`with_twin_activations`, and the converted network's output layer for it."""
    rule = rule_for(spec)
    model = copy.deepcopy(ann).eval()
    names = [name for name, module in model.named_modules() if type(module) is nn.ReLU]
    if not names:
        raise ConversionError("finetune: the model has no nn.ReLU modules to replace")
    found: dict[str, list[Tensor]] = {}
    searched, output = _searched_scales(model, rule, calibration, how, distributed)
    for name, scale in searched:
        found.setdefault(name, []).append(scale)
    levels, shift, upper = rule.twin_parameters()
    for name in names:
        if name not in found:
            continue  # never called: it has no scale and changes nothing
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        twin = ClipQuant(scale=_merged(found[name]), levels=levels, shift=shift, upper=upper)
        setattr(parent, attribute, twin.to(next(model.parameters()).device))
    return model, output


def _searched_scales(
    model: nn.Module,
    rule: Any,
    calibration: Iterable[Any],
    how: tuple[Any, Any],
    distributed: Distributed,
) -> tuple[list[tuple[str, Tensor]], _OutputTwin]:
    """``(name, scale)`` of every activation node of ``model`` without a fixed clip, with the
    scale :func:`convert` calibrates for it (0-d, or ``(C,)`` per channel), on the CPU; and
    the output layer as :func:`convert` calibrates it."""
    percentile, per_channel = how
    if percentile == "default":
        percentile = rule.calibration_percentile()
    if per_channel != "auto" and not isinstance(per_channel, bool):
        raise ConversionError(
            f"finetune: per_channel must be True, False or 'auto', got {per_channel!r}"
        )
    collective = Collective.resolve(distributed, "finetune")
    device = next(model.parameters()).device
    example = collective.agree(
        lambda: next(iter(iterate_inputs(calibration, "finetune"))), "finetune"
    ).to(device)
    nodes = trace(model, example[:2])
    shapes, raw = _value_shapes(nodes, example[:1])
    output = OutputCalibration(output_range(rule))
    scales, _ = _calibrate(
        nodes,
        (shapes, raw, output),
        calibration,
        (device, collective),
        (rule, percentile, per_channel),
    )
    found = [
        (node.name, scales[i].detach().cpu())
        for i, node in enumerate(nodes)
        if node.kind == "neuron" and node.clip is None
    ]
    return found, _OutputTwin(rule, scales[len(nodes) - 1], output.offset)


class _OutputTwin:
    r"""The converted network's output layer as its twin decodes it, on the ANN's logits.

    :math:`y = \lambda\, o((z + c)/\lambda) - c` with :math:`o` the rule's
    :meth:`~snn_encodings.conversion.Rule.twin_output` (e.g. Quartz's rounding to :math:`1/K`
    and clip to :math:`[-1, 1]`), :math:`\lambda` the output scale and :math:`c` the offset
    :func:`convert` calibrated; straight-through gradient (1). Identity where :math:`o` is.
    """

    def __init__(self, rule: Any, scale: Tensor, offset: Tensor) -> None:
        self.rule = rule
        self.scale = scale.detach().cpu()
        self.offset = offset.detach().cpu()

    def follow(self, network: nn.Module) -> None:
        """Take the output scale and offset of ``network``, the model's latest conversion."""
        self.scale = network.output_scale.detach().to("cpu", torch.float32)
        self.offset = network.output_offset.detach().to("cpu", torch.float32)

    def __call__(self, logits: Tensor) -> Tensor:
        scale = channel_view(self.scale.to(logits), logits.dim() - 1)
        offset = self.offset.to(logits)
        z = (logits + offset) / scale
        decoded = self.rule.twin_output(z.detach()).to(z.dtype)
        return (z + (decoded - z.detach())) * scale - offset


def _merged(scales: list[Tensor]) -> Tensor:
    """One bound for a ReLU module called at several places: the largest of their scales."""
    if all(scale.shape == scales[0].shape for scale in scales):
        return torch.stack(scales).amax(0)
    return torch.stack([scale.max() for scale in scales]).amax()


CALIBRATION_SAMPLES = 4096
"""Without a calibration loader, the first 4096 training samples calibrate the scales."""

VALIDATION_EVERY = 10
"""Without a validation loader, every 10th sample (or batch) of the data is held out (10 %)."""


@dataclass
class FinetuneResult:
    """What :func:`finetune` measured: accuracy (0-1) on the held-out validation data, of the
    SNN or of its twin (``selected_on``).

    Attributes:
        start: accuracy of the calibrated network before any training.
        epochs: accuracy after each epoch.
        best_epoch: the epoch returned (0 = the calibrated start, never worse than any epoch).
        selected_on: ``"snn"`` or ``"twin"``: what was measured (``finetune``'s ``select_on``).
    """

    start: float
    epochs: list[float] = field(default_factory=list)
    best_epoch: int = 0
    selected_on: str = "twin"

    @property
    def best(self) -> float:
        """Validation accuracy of the returned model."""
        return self.start if self.best_epoch == 0 else self.epochs[self.best_epoch - 1]


def finetune(
    ann: nn.Module,
    spec: Spec,
    loader: Iterable[Any],
    *,
    validation: Iterable[Any] | None = None,
    calibration: Iterable[Any] | None = None,
    epochs: int = 3,
    lr: float = 5e-4,
    percentile: float | None | str = "auto",
    per_channel: bool | str = "auto",
    freeze_batchnorm: bool = True,
    keep_best: bool = True,
    select_on: Literal["auto", "snn", "twin"] = "auto",
    seed: int = 0,
    progress: bool = True,
    distributed: Distributed = False,
) -> nn.Module:
    """Quantisation-aware fine-tuning of a copy of ``ann`` with ``spec``'s twin activations.

    The ReLUs are replaced by :class:`ClipQuant` modules whose clip bounds are the scales
    :func:`convert` chooses for them (:func:`with_twin_activations`; by default searched per
    layer, one bound per layer or per channel), so training starts from the network
    :func:`convert` gives for ``ann``. It trains the bounds together with the weights
    (straight-through floor, in the spirit of QCFS, Bu et al., 2022), with Adam and a cosine
    learning-rate decay to 0 over all steps. The loss is taken on the logits as the converted
    network's output layer decodes them (e.g. Quartz's rounding to :math:`1/t_{max}` of the
    output scale, straight-through), at the output scale of the latest conversion (the start,
    then each epoch's).
    BatchNorm layers stay in eval mode by default: their running statistics, which conversion
    folds into the weights, are frozen while their affine parameters train. After every epoch
    the model is converted (``convert(model, spec, calibration)``) and the converted network is
    measured on validation data; the best epoch is returned, and the calibrated start counts as
    epoch 0, so the result is never worse on validation than its start. By default the SNN
    itself is measured where it may differ from its twin (IC-rate, the paper modes), and the
    twin, which is cheaper, where they are equal (radix and Quartz exact modes), so the epoch
    is always picked on the accuracy of the network that runs.

    Args:
        ann: a trained ANN (not modified).
        spec: the target encoding.
        loader: ``(input, target)`` training batches.
        validation: ``(input, target)`` batches to select the epoch on. By default every 10th
            sample of ``loader.dataset`` (a ``DataLoader``), or every 10th batch of any other
            iterable, is held out and never trained on.
        calibration: input batches (or ``(input, target)`` pairs) for the scales, read again
            at every epoch; by default the first :data:`CALIBRATION_SAMPLES` samples the
            training part yields, kept in memory. Converting the result with the same batches
            gives the network whose accuracy ``finetune_result`` reports.
        epochs: passes over the training data (0 returns the calibrated twin).
        lr: initial Adam learning rate.
        percentile, per_channel: how the initial clip bounds are calibrated, as for
            :func:`convert` (by default searched per layer).
        freeze_batchnorm: keep BatchNorm running statistics fixed (``False``: update them).
        keep_best: return the best validation epoch (default); ``False`` returns the last
            epoch's weights (``finetune_result.best_epoch`` then is ``epochs``).
        select_on: what validation measures: ``"snn"`` the simulated network, ``"twin"`` its
            ANN twin (cheaper; the SNN may be less accurate where they differ), ``"auto"``
            (default) the SNN unless it equals its twin.
        seed: seeds the shuffling of the training part when ``finetune`` splits ``loader``.
        progress: show a progress bar with the validation accuracy (rank 0 only).
        distributed: ``True`` (or a process group): ``loader`` yields this process's shard
            (:func:`snn_encodings.distributed.shard_loader` with ``training=True``), the clip
            bounds are calibrated on all shards together, training runs under
            ``DistributedDataParallel`` and validation counts are summed over the processes;
            every process returns the same weights.
    Returns:
        The fine-tuned copy, in eval mode; its ``finetune_result`` attribute is a
        :class:`FinetuneResult`.
    Raises:
        ConversionError: for a bad ``epochs``, empty data, or too little data to hold out.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConversionError(f"finetune: epochs must be an integer >= 0, got {epochs!r}")
    if select_on not in ("auto", "snn", "twin"):
        raise ConversionError(
            f"finetune: select_on must be 'auto', 'snn' or 'twin', got {select_on!r}"
        )
    if select_on == "auto":
        select_on = "twin" if rule_for(spec).equals_twin else "snn"
    collective = Collective.resolve(distributed, "finetune")
    if validation is None:
        loader, validation = _hold_out(loader, seed, collective)
    if calibration is None:
        calibration = _first_samples(loader, CALIBRATION_SAMPLES)
    model, output = _twin_model(ann, spec, calibration, (percentile, per_channel), distributed)
    grid = _input_grid(spec)
    validation = [_pair(batch) for batch in validation]

    def measure() -> float:
        network = convert(model, spec, calibration, distributed=distributed)
        output.follow(network)
        device = next(model.parameters()).device
        view = network.twin if select_on == "twin" else network
        return _accuracy(lambda x: view(x.to(device)).cpu(), validation, collective)

    result = FinetuneResult(start=measure(), selected_on=select_on)
    best = copy.deepcopy(model.state_dict())
    trained = wrap_ddp(model, process_group=collective.group) if collective.enabled else model
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps = max(1, epochs * _length(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    bar = tqdm(range(1, epochs + 1), desc="finetune", disable=not progress or collective.rank != 0)
    bar.set_postfix(val=f"{100 * result.start:.2f}%")
    for epoch in bar:
        _train_epoch(
            (trained, model), (loader, grid, output), optimiser, schedule, epoch, freeze_batchnorm
        )
        result.epochs.append(measure())
        if result.epochs[-1] > result.best or not keep_best:
            result.best_epoch = epoch
            best = copy.deepcopy(model.state_dict())
        bar.set_postfix(val=f"{100 * result.epochs[-1]:.2f}%", best=f"{100 * result.best:.2f}%")
    model.load_state_dict(best)
    model.eval()
    model.finetune_result = result
    return model


def _train_epoch(
    models: tuple[nn.Module, nn.Module],
    data: tuple[Iterable[Any], Callable[[Tensor], Tensor], _OutputTwin],
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    freeze_batchnorm: bool,
) -> None:
    trained, model = models
    loader, grid, output = data
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    for batch in loader:
        x, target = _pair(batch)
        optimiser.zero_grad()
        logits = output(trained(grid(x)))
        nn.functional.cross_entropy(logits, _checked_targets(target, logits)).backward()
        optimiser.step()
        schedule.step()


def _pair(batch: Any) -> tuple[Tensor, Tensor]:
    """``(input, target)`` of a batch, refusing loaders that yield inputs alone."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ConversionError(
            "finetune: the loader must yield (input, target) batches; wrap tensors in "
            "a TensorDataset(inputs, targets)"
        )
    return batch[0], batch[1]


def _checked_targets(target: Tensor, logits: Tensor) -> Tensor:
    """``target`` as class indices in ``[0, classes)`` for ``logits`` ``(B, classes)``."""
    target = class_indices(target, logits)
    if len(target) and not 0 <= int(target.min()) <= int(target.max()) < logits.shape[1]:
        raise ConversionError(
            f"finetune: targets must be class indices in [0, {logits.shape[1]}), got "
            f"values from {int(target.min())} to {int(target.max())}"
        )
    return target


def _input_grid(spec: Spec) -> Callable[[Tensor], Tensor]:
    """The input as the converted network's twin sees it (raw for a float first layer)."""
    if getattr(spec, "float_first_layer", False):
        return lambda x: x
    rule = rule_for(spec)
    return lambda x: rule.decode_input(x).to(x.dtype)


def _accuracy(
    model: Callable[[Tensor], Tensor],
    validation: list[tuple[Tensor, Tensor]],
    collective: Collective,
) -> float:
    """Top-1 accuracy of ``model`` (a converted network or its twin), summed over the processes."""
    counts = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for x, y in validation:
            out = model(x)
            counts[0] += float((out.argmax(1) == class_indices(y, out)).sum())
            counts[1] += len(y)
    counts = collective.sum(counts)
    if counts[1] == 0:
        raise ConversionError("finetune: the validation data is empty")
    return float(counts[0] / counts[1])


def _first_samples(loader: Iterable[Any], samples: int) -> list[Any]:
    """The first batches ``loader`` yields, up to ``samples`` samples in all."""
    kept: list[Any] = []
    seen = 0
    for batch in loader:
        kept.append(batch)
        seen += len(batch_input(batch))
        if seen >= samples:
            break
    return kept


def _length(loader: Iterable[Any]) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in loader)


def _hold_out(
    loader: Iterable[Any], seed: int, collective: Collective
) -> tuple[Iterable[Any], Iterable[Any]]:
    """Split ``loader`` into training and validation parts (every 10th sample or batch)."""
    dataset = getattr(loader, "dataset", None)
    if isinstance(loader, DataLoader) and hasattr(dataset, "__len__"):
        size = len(dataset)  # type: ignore[arg-type]
        held = list(range(VALIDATION_EVERY - 1, size, VALIDATION_EVERY))
        if not held:
            raise ConversionError(
                f"finetune: {size} samples are too few to hold out every {VALIDATION_EVERY}th "
                "for validation; pass validation= or more data"
            )
        kept = [i for i in range(size) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
        batch = loader.batch_size or 1
        train = Subset(dataset, kept)  # type: ignore[arg-type]
        if collective.enabled:
            return (
                shard_loader(train, batch, training=True, shuffle=True, seed=seed),
                shard_loader(Subset(dataset, held), batch),  # type: ignore[arg-type]
            )
        generator = torch.Generator().manual_seed(seed)
        return (
            DataLoader(train, batch_size=batch, shuffle=True, generator=generator),
            DataLoader(Subset(dataset, held), batch_size=batch),  # type: ignore[arg-type]
        )
    batches = list(loader)
    if len(batches) < 2:
        raise ConversionError(
            "finetune: one batch is too little to hold out validation data; pass validation= "
            "or more batches"
        )
    held_batches = batches[VALIDATION_EVERY - 1 :: VALIDATION_EVERY] or batches[-1:]
    train_batches = [b for b in batches if all(b is not h for h in held_batches)]
    return train_batches, held_batches
