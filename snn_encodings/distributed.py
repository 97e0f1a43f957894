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
import contextvars
import hashlib
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, Literal, TypeVar, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

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

Distributed = Union[bool, "dist.ProcessGroup", None]
"""The ``distributed=`` argument of the pipeline: ``False``/``None`` (one process), ``True`` (the
default process group) or a ``torch.distributed.ProcessGroup``."""

T = TypeVar("T")


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group from ``torchrun``'s environment, if there is one.

    ``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT``. Without them (a plain ``python`` run) nothing happens and the program
    runs as one process.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available, else gloo. With
            NCCL, the process's CUDA device is set to ``LOCAL_RANK``.
    Returns:
        ``True`` if a process group is initialised (now or before), ``False`` otherwise.
    """
    if _initialised():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if not dist.is_available():
        raise RuntimeError("init_from_env: this torch build has no torch.distributed support")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def is_main_process() -> bool:
    """``True`` in a single-process run and on rank 0 of a distributed job."""
    return not _initialised() or dist.get_rank() == 0


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the ``with`` block on rank 0 first, then on the other processes (e.g. so that rank 0
    alone trains and caches a model that the others then load). No effect without a group."""
    if _initialised() and dist.get_rank() != 0:
        dist.barrier()
    yield
    if _initialised() and dist.get_rank() == 0:
        dist.barrier()


def broadcast_module(module: nn.Module) -> nn.Module:
    """Copy rank 0's parameters and buffers into ``module`` on every process; return it.

    The processes' modules must have the same structure (checked). No effect without a group.

    Raises:
        ConversionError: if the processes' modules differ in structure.
    """
    if not _initialised():
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
            else (dist.get_world_size() if _initialised() else 1)
        )
        self.rank = rank if rank is not None else (dist.get_rank() if _initialised() else 0)
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
    if not _initialised():
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
                f"evaluate: the loader's DistributedSampler {what} {abs(sampler.total_size - size)} "
                f"sample(s) to give {sampler.num_replicas} processes equal shards, so counts would be "
                "wrong; use snn_encodings.distributed.shard_loader(dataset, batch_size) or "
                "DistributedEvalSampler"
            )


def structure_key(module: nn.Module) -> str:
    """A text that equal models share: every submodule's name, type and spec (if it has one),
    and every parameter's and buffer's name, shape and dtype (not their values)."""
    parts = [
        f"{name}:{type(m).__name__}:{getattr(m, 'spec', None)!r}"
        for name, m in module.named_modules()
    ]
    parts += [f"{name}:{tuple(t.shape)}:{t.dtype}" for name, t in module.state_dict().items()]
    return "\n".join(parts)


class Collective:
    """The processes a pipeline step merges its statistics over (one process if ``group`` is unset).

    Build with :meth:`resolve`. Every method is a collective: all processes of the group must
    call it in the same order.
    """

    def __init__(self, group: Any = None, *, enabled: bool = False) -> None:
        self.group = group
        self.enabled = enabled
        self.rank = dist.get_rank(group) if enabled else 0
        self.world_size = dist.get_world_size(group) if enabled else 1

    @classmethod
    def resolve(cls, distributed: Distributed, where: str) -> Collective:
        """The collective for a ``distributed=`` argument.

        Raises:
            ConversionError: if a distributed run is asked for without an initialised process
                group, or ``distributed`` is neither a bool nor a process group.
        """
        if distributed is None or distributed is False:
            return cls()
        if distributed is not True and not (
            dist.is_available() and isinstance(distributed, dist.ProcessGroup)
        ):
            raise ConversionError(
                f"{where}: distributed must be a bool or a torch.distributed.ProcessGroup, got {type(distributed).__name__}"
            )
        if not _initialised():
            raise ConversionError(
                f"{where}: distributed=True needs an initialised torch.distributed process group; "
                "start the job with torchrun and call snn_encodings.distributed.init_from_env() "
                "(or torch.distributed.init_process_group) first, or pass distributed=False"
            )
        return cls(None if distributed is True else distributed, enabled=True)

    # --- tensors -------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _all_reduce(self, tensor: Tensor, op: Any) -> Tensor:
        if not self.enabled:
            return tensor
        buffer = tensor.detach().to(self._device(), copy=True).contiguous()
        dist.all_reduce(buffer, op=op, group=self.group)
        return buffer.to(tensor.device)

    def sum(self, tensor: Tensor) -> Tensor:
        """Elementwise sum over the processes (a new tensor; ``tensor`` is left unchanged)."""
        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def max(self, tensor: Tensor) -> Tensor:
        """Elementwise maximum over the processes."""
        return self._all_reduce(tensor, dist.ReduceOp.MAX)

    def _gather(self, tensor: Tensor) -> list[Tensor]:
        local = tensor.to(self._device())
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local, group=self.group)
        return [p.cpu() for p in parts]

    # --- agreement -----------------------------------------------------------------------------
    def check_same(self, key: str, where: str) -> None:
        """Raise on every process if the processes' structure keys differ.

        Raises:
            ConversionError: naming the processes whose model differs from rank 0's.
        """
        if not self.enabled:
            return
        digest = hashlib.sha256(key.encode()).digest()[:16]
        keys = self._gather(torch.frombuffer(bytearray(digest), dtype=torch.int64).clone())
        differ = [rank for rank, other in enumerate(keys) if not torch.equal(other, keys[0])]
        if differ:
            raise ConversionError(
                f"{where}: the model differs between processes: rank(s) {differ} have other layers or "
                "parameter shapes than rank 0; build (or load) the same model on every process"
            )

    def agree(self, step: Callable[[], T], where: str) -> T:
        """Run ``step`` on every process; if it raises anywhere, raise on every process.

        Without this, one process failing alone (an empty shard, say) would leave the others
        waiting in their next collective.
        """
        failure: ConversionError | None = None
        result: Any = None
        try:
            result = step()
        except ConversionError as error:
            failure = error
        if self.enabled:
            flags = self._gather(torch.tensor([failure is not None], dtype=torch.int64))
            failed = [rank for rank, flag in enumerate(flags) if int(flag)]
            if failed and failure is None:
                raise ConversionError(
                    f"{where}: process(es) {failed} failed; see their error messages"
                )
        if failure is not None:
            raise failure
        return result

    # --- pipeline statistics -------------------------------------------------------------------
    def merge_stats(self, stats: Iterable[Any], stage: Literal["max", "histogram"]) -> None:
        """Merge :class:`~snn_encodings.conversion.calibrate.ActivationStats` in place.

        ``"max"`` after the first pass (``all_reduce(MAX)`` of the maxima), ``"histogram"`` after
        the second (``all_reduce(SUM)`` of the histograms and counts). One collective per stage.
        """
        if not self.enabled:
            return
        stats = list(stats)
        if stage == "max":
            parts = [s.maximum for s in stats]
            merged = self.max(torch.cat([p.flatten().to(torch.float64).cpu() for p in parts]))
            for s, piece in zip(stats, merged.split([p.numel() for p in parts])):
                s.maximum = piece.view_as(s.maximum).to(s.maximum.device, s.maximum.dtype)
            return
        parts = [s.histogram for s in stats]
        flat = torch.cat(
            [p.flatten() for p in parts]
            + [torch.tensor([float(s.count) for s in stats], dtype=torch.float64)]
        )
        merged = self.sum(flat)
        sizes = [p.numel() for p in parts]
        for s, piece in zip(stats, merged[: sum(sizes)].split(sizes)):
            s.histogram = piece.view_as(s.histogram).clone()
        for s, count in zip(stats, merged[sum(sizes) :].tolist()):
            s.count = int(count)

    def merge_evaluation(
        self, correct: int, samples: int, layers: Sequence[Any]
    ) -> tuple[int, int]:
        """Sum evaluation counts over the processes; ``layers`` (``LayerCounts``) in place.

        Counts are carried in float64, exact for integers below :math:`2^{53}`.
        """
        if not self.enabled:
            return correct, samples
        values = [float(correct), float(samples)]
        for layer in layers:
            values += [layer.spikes, layer.synaptic_events, float(layer.samples)]
            values += [layer.extra[key] for key in sorted(layer.extra)]
        merged = self.sum(torch.tensor(values, dtype=torch.float64)).tolist()
        position = 2
        for layer in layers:
            layer.spikes, layer.synaptic_events, samples_seen = merged[position : position + 3]
            layer.samples = int(samples_seen)
            position += 3
            for key in sorted(layer.extra):
                layer.extra[key] = merged[position]
                position += 1
        return int(merged[0]), int(merged[1])


_ACTIVE: contextvars.ContextVar[Collective | None] = contextvars.ContextVar(
    "snn_encodings_collective", default=None
)


def active_collective() -> Collective:
    """The collective of the pipeline step in progress (one process outside distributed steps).

    A rule's data-based :meth:`~snn_encodings.conversion.Rule.finalize` sees only this process's
    shard of the calibration data; it merges what it measures with
    ``active_collective().sum(...)`` so that every process ends with the same network.
    """
    return _ACTIVE.get() or Collective()


@contextlib.contextmanager
def use_collective(collective: Collective) -> Iterator[Collective]:
    """Make ``collective`` the :func:`active_collective` inside the ``with`` block."""
    token = _ACTIVE.set(collective)
    try:
        yield collective
    finally:
        _ACTIVE.reset(token)


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
    from snn_encodings.conversion.network import SpikingNetwork

    collective = Collective.resolve(True if process_group is None else process_group, "wrap_ddp")
    collective.check_same(structure_key(model), "wrap_ddp")
    if sync_buffers is None:
        sync_buffers = not isinstance(model, SpikingNetwork)
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
