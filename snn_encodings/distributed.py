r"""Running calibration, evaluation and fine-tuning inside a ``torch.distributed`` job.

snn-encodings has no process pool of its own: it works inside the job that ``torchrun`` (or any
launcher calling :func:`torch.distributed.init_process_group`) starts, with the gloo backend on
CPUs or NCCL on GPUs. Each process handles its own shard of the data and the results are merged
with collectives:

- :func:`~snn_encodings.convert` ``(..., distributed=True)``: activation maxima are merged with
  ``all_reduce(MAX)`` after the first calibration pass, so every process bins the second pass
  over the same range; the histograms are then added with ``all_reduce(SUM)``. The scales equal
  single-process calibration on the union of the shards: exactly for the maximum, and exactly
  for a percentile *given the same bins* (``ActivationStats.bins`` equal bins over
  ``[0, max]``, so a percentile is resolved to ``max / bins``). Data-based steps of an
  encoding's rule (IC-rate ``init="data"``) merge their measurements through
  :func:`active_collective`.
- :func:`~snn_encodings.evaluate` ``(..., distributed=True)``: correct predictions, spikes and
  synaptic events are summed over the processes; every process returns the global
  :class:`~snn_encodings.Evaluation`.
- :func:`~snn_encodings.finetune` ``(..., distributed=True)``: merged calibration of the clip
  bounds, then training under :class:`~torch.nn.parallel.DistributedDataParallel`.

The collectives themselves (:class:`~snn_encodings.collective.Collective`,
:func:`active_collective`, :func:`structure_key`) live in :mod:`snn_encodings.collective`, which
the conversion package imports; this module holds the launch, sharding and DDP helpers around
them and imports nothing from the conversion package, so the two have no import cycle.

The distributed path is opt-in (``distributed=True`` or a process group), never detected
automatically: a job may well convert on rank 0 alone while the group is initialised, and a
collective entered by one process only would wait forever.

Sharding: :func:`shard_loader` gives each process its shard. For calibration and evaluation it
uses :class:`DistributedEvalSampler`, which, unlike :class:`~torch.utils.data.DistributedSampler`,
does not pad the last shard by repeating samples, so every sample is counted exactly once (the
shards differ in length by at most one sample). For training it uses ``DistributedSampler``,
whose equal shard lengths DDP needs. :func:`~snn_encodings.evaluate` refuses a padding or
dropping ``DistributedSampler`` rather than miscount.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import sys
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from snn_encodings.collective import (
    Collective,
    Distributed,
    active_collective,
    initialised,
    structure_key,
    use_collective,
)
from snn_encodings.errors import ConversionError

__all__ = [
    "Collective",
    "Distributed",
    "DistributedEvalSampler",
    "active_collective",
    "broadcast_module",
    "check_eval_loader",
    "init_from_env",
    "is_main_process",
    "main_process_first",
    "shard_loader",
    "structure_key",
    "use_collective",
    "wrap_ddp",
]


def init_from_env(backend: str | None = None, *, timeout: float = 300.0) -> bool:
    """Initialise the default process group from ``torchrun``'s environment, if there is one.

    ``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT``. Without them (a plain ``python`` run) nothing happens and the program
    runs as one process.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available, else gloo. With
            NCCL, the process's CUDA device is set to ``LOCAL_RANK``.
        timeout: seconds to wait for the other processes to join (and for later collectives).
    Returns:
        ``True`` if a process group is initialised (now or before), ``False`` otherwise.
    Raises:
        ConversionError: if the other ``WORLD_SIZE - 1`` processes do not join within
            ``timeout`` seconds, or the environment names an unreachable address.
    """
    if initialised():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if not dist.is_available():
        raise RuntimeError("init_from_env: this torch build has no torch.distributed support")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(
            backend=backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout)
        )
    except (RuntimeError, ValueError) as error:  # DistStoreError / DistNetworkError included
        raise ConversionError(
            f"init_from_env: rank {os.environ['RANK']} of WORLD_SIZE={os.environ['WORLD_SIZE']} "
            f"could not form the process group within {timeout:g} s at "
            f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "start every process (e.g. with torchrun --nproc-per-node N) with the same "
            "MASTER_ADDR/MASTER_PORT, or unset RANK/WORLD_SIZE to run as one process"
        ) from None
    return True


def is_main_process() -> bool:
    """``True`` in a single-process run and on rank 0 of a distributed job."""
    return not initialised() or dist.get_rank() == 0


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the ``with`` block on rank 0 first, then on the other processes (e.g. so that rank 0
    alone trains and caches a model that the others then load). No effect without a group."""
    if initialised() and dist.get_rank() != 0:
        dist.barrier()
    yield
    if initialised() and dist.get_rank() == 0:
        dist.barrier()


def broadcast_module(module: nn.Module) -> nn.Module:
    """Copy rank 0's parameters and buffers into ``module`` on every process; return it.

    The processes' modules must have the same structure (checked). No effect without a group.

    Raises:
        ConversionError: if the processes' modules differ in structure.
    """
    if not initialised():
        return module
    collective = Collective(None, enabled=True)
    collective.check_same(structure_key(module), "broadcast_module")
    with torch.no_grad():
        for tensor in module.state_dict().values():
            buffer = tensor.to(collective._device(), copy=True)
            dist.broadcast(buffer, src=0)
            tensor.copy_(buffer)
    return module


class DistributedEvalSampler(Sampler[int]):
    """Indices of this process's shard, every index in exactly one shard, no padding.

    Process ``rank`` of ``world_size`` gets indices ``rank, rank + world_size, ...`` of the
    (optionally shuffled) dataset order, so the shards differ in length by at most one.

    Args:
        dataset: a sized dataset.
        num_replicas, rank: default from the initialised process group (or 1 and 0).
        shuffle: shuffle the order with ``seed`` (the same on every process) before sharding.
        seed: the shuffling seed.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        self.size = len(dataset)
        self.num_replicas = (
            num_replicas
            if num_replicas is not None
            else (dist.get_world_size() if initialised() else 1)
        )
        self.rank = rank if rank is not None else (dist.get_rank() if initialised() else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(
                f"DistributedEvalSampler: rank must be in [0, {self.num_replicas}), got {self.rank}"
            )
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling order (as ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        return iter(order[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))


def shard_loader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    training: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    **loader_options: Any,
) -> DataLoader[Any]:
    """A ``DataLoader`` over this process's shard of ``dataset`` (the whole of it without a group).

    Args:
        dataset: a sized map-style dataset.
        batch_size: samples per batch on each process.
        training: ``False`` (calibration, evaluation): :class:`DistributedEvalSampler`, every
            sample exactly once over all processes. ``True`` (DDP training):
            ``DistributedSampler``, equal shard lengths, the last shard padded by repeating
            samples; call ``loader.sampler.set_epoch(epoch)`` each epoch when shuffling.
        shuffle, seed: shuffle with the same seed on every process.
        loader_options: passed to ``DataLoader`` (``num_workers``, ``pin_memory``, ...).
    """
    if not initialised():
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, **loader_options
        )
    sampler: Sampler[int]
    if training:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
    else:
        sampler = DistributedEvalSampler(dataset, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **loader_options)


def check_eval_loader(loader: Iterable[Any]) -> None:
    """Refuse a loader whose ``DistributedSampler`` repeats (pads) or drops samples.

    Raises:
        ConversionError: naming the sampler and what to use instead.
    """
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        size = len(sampler.dataset)  # type: ignore[arg-type]
        if sampler.total_size != size:
            what = "repeats" if sampler.total_size > size else "drops"
            raise ConversionError(
                f"evaluate: the loader's DistributedSampler {what} "
                f"{abs(sampler.total_size - size)} "
                f"sample(s) to give {sampler.num_replicas} processes equal shards, so counts would "
                "be "
                "wrong; use snn_encodings.distributed.shard_loader(dataset, batch_size) or "
                "DistributedEvalSampler"
            )


def _is_spiking_network(model: nn.Module) -> bool:
    # A model can only be a SpikingNetwork if its module is loaded; looking it up instead of
    # importing it keeps this module free of imports from the conversion package.
    network = sys.modules.get("snn_encodings.conversion.network")
    return network is not None and isinstance(model, network.SpikingNetwork)


def wrap_ddp(
    model: nn.Module,
    *,
    process_group: Any = None,
    sync_buffers: bool | None = None,
    **ddp_options: Any,
) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` after checking every process built the same one.

    Args:
        model: an ANN, a twin-activation ANN from fine-tuning, or a converted
            :class:`~snn_encodings.SpikingNetwork`.
        process_group: the group to train over (default: the default group).
        sync_buffers: whether DDP copies rank 0's buffers to the others before every forward
            pass (DDP's ``forward_sync_buffers``, ``broadcast_buffers`` before torch 2.13).
            Default ``False`` for a ``SpikingNetwork``: its buffers (synapse gains, IC-rate's
            measured initial membranes ``v0``) are conversion results, equal on every process
            (checked here) and constant in training, and the neuron state is transient within
            each forward pass, not a buffer. Otherwise DDP's default ``True``, so that BatchNorm
            running statistics follow rank 0.
        ddp_options: passed to ``DistributedDataParallel``. ``device_ids`` defaults to the
            model's CUDA device, if it has one.
    Raises:
        ConversionError: without an initialised process group, or if the processes' models
            differ in structure or parameter shapes.
    """
    collective = Collective.resolve(True if process_group is None else process_group, "wrap_ddp")
    collective.check_same(structure_key(model), "wrap_ddp")
    if sync_buffers is None:
        sync_buffers = not _is_spiking_network(model)
    ddp = nn.parallel.DistributedDataParallel
    option = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(ddp).parameters
        else "broadcast_buffers"
    )
    ddp_options[option] = sync_buffers
    first = next(iter(model.parameters()), None)
    if "device_ids" not in ddp_options and first is not None and first.device.type == "cuda":
        ddp_options["device_ids"] = [first.device]
    return ddp(model, process_group=process_group, **ddp_options)
