r"""The collectives a pipeline step merges its statistics with (one process without a group).

:func:`~snn_encodings.convert`, :func:`~snn_encodings.evaluate` and
:func:`~snn_encodings.finetune` use :class:`Collective` for their ``distributed=`` argument; the
data-sharding and training helpers a job uses around them live in
:mod:`snn_encodings.distributed`. This module imports nothing from the conversion package, so
conversion and the distributed helpers have no import cycle.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from snn_encodings.errors import ConversionError

__all__ = [
    "Collective",
    "Distributed",
    "active_collective",
    "initialised",
    "structure_key",
    "use_collective",
    "weights_digest",
]

Distributed = Union[bool, "dist.ProcessGroup", None]
"""The ``distributed=`` argument of the pipeline: ``False``/``None`` (one process), ``True`` (the
default process group) or a ``torch.distributed.ProcessGroup``."""

T = TypeVar("T")


def initialised() -> bool:
    """Whether a default ``torch.distributed`` process group exists in this process."""
    return dist.is_available() and dist.is_initialized()


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
                f"{where}: distributed must be a bool or a torch.distributed.ProcessGroup, got "
                f"{type(distributed).__name__}"
            )
        if not initialised():
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
    def _differing_ranks(self, key: str) -> list[int]:
        digest = hashlib.sha256(key.encode()).digest()[:16]
        keys = self._gather(torch.frombuffer(bytearray(digest), dtype=torch.int64).clone())
        return [rank for rank, other in enumerate(keys) if not torch.equal(other, keys[0])]

    def check_same(self, key: str, where: str) -> None:
        """Raise on every process if the processes' structure keys differ.

        Raises:
            ConversionError: naming the processes whose model differs from rank 0's.
        """
        if not self.enabled:
            return
        differ = self._differing_ranks(key)
        if differ:
            raise ConversionError(
                f"{where}: the model differs between processes: rank(s) {differ} have other layers "
                "or "
                "parameter shapes than rank 0; build (or load) the same model on every process"
            )

    def check_same_weights(self, module: nn.Module, where: str) -> None:
        """Raise on every process if the processes' ``module`` values differ (same shapes or not).

        Compares :func:`weights_digest` over the processes.

        Raises:
            ConversionError: naming the processes whose weights differ from rank 0's.
        """
        if not self.enabled:
            return
        differ = self._differing_ranks(weights_digest(module))
        if differ:
            raise ConversionError(
                f"{where}: the model's weights differ between processes: rank(s) {differ} hold "
                "other values than rank 0; load the same checkpoint on every process, or call "
                "snn_encodings.distributed.broadcast_module(model) first"
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


def weights_digest(module: nn.Module) -> str:
    """A SHA-256 of every parameter's and buffer's name, dtype, shape and bytes (CPU copies).

    Equal on two processes exactly when their models hold bitwise-equal values.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
