"""Quantisation-aware fine-tuning of an ANN with an encoding's twin activation."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from snn_encodings.conversion.calibrate import ActivationStats, iterate_inputs
from snn_encodings.conversion.evaluate import class_indices
from snn_encodings.conversion.rules.base import rule_for
from snn_encodings.conversion.twin import ClipQuant
from snn_encodings.distributed import Collective, Distributed, wrap_ddp
from snn_encodings.errors import ConversionError
from snn_encodings.specs.base import Spec

__all__ = ["finetune", "with_twin_activations"]


def with_twin_activations(
    ann: nn.Module,
    spec: Spec,
    calibration: Iterable[Any],
    *,
    percentile: float | None = 99.99,
    distributed: Distributed = False,
) -> nn.Module:
    """A copy of ``ann`` whose ReLUs are :class:`ClipQuant` twins of ``spec``, clip bounds calibrated.

    Each ``nn.ReLU`` module becomes ``ClipQuant(scale=lambda, levels, shift, upper)`` with the
    encoding's grid (:meth:`Rule.twin_parameters`) and :math:`\\lambda` the given percentile of
    that ReLU's outputs on ``calibration``. ``ann`` is not modified. With ``distributed``, the
    statistics of every process's shard are merged as in :func:`~snn_encodings.convert`.

    Raises:
        ConversionError: if ``ann`` has no ``nn.ReLU`` modules or the loader is empty.
    """
    levels, shift, upper = rule_for(spec).twin_parameters()
    collective = Collective.resolve(distributed, "finetune")
    model = copy.deepcopy(ann).eval()
    names = [name for name, module in model.named_modules() if type(module) is nn.ReLU]
    if not names:
        raise ConversionError("finetune: the model has no nn.ReLU modules to replace")
    stats = {name: ActivationStats() for name in names}
    passes = [0]
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda m, i, out, name=name: _record(stats, name, out, passes)
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            for index in range(1 if percentile is None else 2):
                passes[0] = index
                for x in iterate_inputs(calibration, "finetune"):
                    model(x)
                collective.merge_stats(stats.values(), "max" if index == 0 else "histogram")
    finally:
        for hook in hooks:
            hook.remove()
    for name in names:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        scale = float(stats[name].scale(percentile))
        setattr(parent, attribute, ClipQuant(scale=scale, levels=levels, shift=shift, upper=upper))
    return model


def _record(
    stats: dict[str, ActivationStats], name: str, out: torch.Tensor, passes: list[int]
) -> None:
    if passes[0] == 0:
        stats[name].update_max(out)
    else:
        stats[name].update_histogram(out)


def finetune(
    ann: nn.Module,
    spec: Spec,
    loader: Iterable[Any],
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    percentile: float | None = 99.99,
    progress: bool = True,
    distributed: Distributed = False,
) -> nn.Module:
    """Fine-tune a copy of ``ann`` with ``spec``'s twin activations (straight-through floor).

    The ReLUs are replaced by calibrated :class:`ClipQuant` modules (trainable clip bound,
    the encoding's quantisation grid) and the whole network is trained with Adam and
    cross-entropy, so that :func:`convert` afterwards is lossless (radix, Quartz) or near-lossless
    (IC-rate at low T), in the spirit of QCFS (Bu et al., 2022).

    Args:
        ann: a trained ANN (not modified).
        spec: the target encoding.
        loader: ``(input, target)`` training batches; also used for calibration.
        epochs: passes over ``loader``.
        lr: Adam learning rate.
        percentile: initial clip bounds (percentile of each ReLU's outputs; ``None``: max).
        progress: show a progress bar (on rank 0 only when distributed).
        distributed: ``True`` (or a process group): ``loader`` yields this process's shard
            (:func:`snn_encodings.distributed.shard_loader` with ``training=True``), the clip
            bounds are calibrated on all shards together and training runs under
            ``DistributedDataParallel``; every process returns the same weights.
    Returns:
        The fine-tuned copy, in eval mode.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConversionError(f"finetune: epochs must be an integer >= 0, got {epochs!r}")
    model = with_twin_activations(ann, spec, loader, percentile=percentile, distributed=distributed)
    collective = Collective.resolve(distributed, "finetune")
    trained = wrap_ddp(model, process_group=collective.group) if collective.enabled else model
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        for batch in tqdm(
            loader, desc="finetune", disable=not progress or collective.rank != 0, leave=False
        ):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ConversionError(
                    "finetune: the loader must yield (input, target) batches; wrap tensors in "
                    "a TensorDataset(inputs, targets)"
                )
            x, target = batch[0], batch[1]
            optimiser.zero_grad()
            logits = trained(x)
            target = class_indices(target, logits)
            if len(target) and not 0 <= int(target.min()) <= int(target.max()) < logits.shape[1]:
                raise ConversionError(
                    f"finetune: targets must be class indices in [0, {logits.shape[1]}), got "
                    f"values from {int(target.min())} to {int(target.max())}"
                )
            loss = nn.functional.cross_entropy(logits, target)
            loss.backward()
            optimiser.step()
    return model.eval()
