"""Our own CuPy multi-step kernels for the SpikingJelly nodes, with their torch glue.

The CUDA sources live next to this file (``<encoding>.cu``, sharing the storage helpers of
``common.cuh``, which :func:`source` inlines) and are compiled at first use with NVRTC through
``cupy.RawModule``. Each kernel runs one thread per neuron and loops over the ``T`` steps of a
time-first ``[T, N]`` block. IC-rate (plain and signed) and radix (both modes) have a forward
and a surrogate-gradient backward kernel; Quartz (both modes) a forward kernel only (inference:
a run that needs gradients raises). The core torch step function is the reference: each forward
kernel repeats its operations, and each backward kernel those of autograd through it, with the
same rounding; the tests compare them with :func:`snn_encodings.functional.simulate` and its
gradients bit for bit (see ``docs/kernels.md`` for what runs where).

The last step of every call, the launch, is a small injectable backend (a
:class:`~.launch.Launcher`, see :mod:`.launch`): :data:`CUPY` (the default) runs the kernels on
CUDA tensors; :data:`EMULATED` compiles the very same sources with a C++ compiler (``g++``) and
runs every block x thread of the grid on CPU tensors. Everything before the launch (flattening,
dtype dispatch, argument order and scalar types, the autograd Functions) is shared, so the
emulated launch checks it too; the tests compare it with the torch step on any machine with
``g++``. Select it with ``with use_launcher(EMULATED): ...`` or the ``launcher=`` argument.

Nothing here imports cupy at module import time, so the package imports on machines without
CUDA; :func:`require_cupy` raises a clear error when a kernel is asked for there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy
import torch
from torch import Tensor

from snn_encodings.encoding import registered_encodings
from snn_encodings.errors import SpecError
from snn_encodings.functional.radix import radix_digit_thresholds
from snn_encodings.specs import Quartz, Radix
from snn_encodings.specs.base import Spec

from .launch import (
    COMPILE_OPTIONS,
    CUPY,
    EMULATED,
    HOST_COMPILE_OPTIONS,
    KERNEL_FUNCTIONS,
    CupyLauncher,
    EmulatedLauncher,
    Launcher,
    compile_ptx,
    current_launcher,
    host_source,
    require_cupy,
    source,
    use_launcher,
)

__all__ = [
    "COMPILE_OPTIONS",
    "CUPY",
    "EMULATED",
    "HOST_COMPILE_OPTIONS",
    "KERNEL_FUNCTIONS",
    "KERNEL_SOURCES",
    "SURROGATE_KINDS",
    "CupyLauncher",
    "EmulatedLauncher",
    "Launcher",
    "compile_ptx",
    "current_launcher",
    "has_kernel",
    "host_source",
    "icrate_multi_step",
    "multi_step",
    "quartz_multi_step",
    "radix_multi_step",
    "require_cupy",
    "signed_icrate_multi_step",
    "source",
    "surrogate_kind",
    "use_launcher",
]

KERNEL_SOURCES: dict[type[Spec], str] = {
    record.spec_type: record.kernel for record in registered_encodings() if record.kernel
}
"""Spec class -> CUDA source file of its multi-step kernels (its encoding record's ``kernel``)."""

SURROGATE_KINDS: dict[str, int] = {"Sigmoid": 0, "ATan": 1}
"""SpikingJelly surrogate class name -> the kernel's surrogate derivative code (2 = none)."""

_SUFFIX = {torch.float16: "f16", torch.float32: "f32", torch.float64: "f64"}
_THREADS = 256


def has_kernel(spec: Spec) -> bool:
    """Whether ``spec``'s encoding has a CuPy multi-step kernel (every registered encoding with
    a ``kernel`` file, IC-rate plain and signed)."""
    return type(spec) in KERNEL_SOURCES


def surrogate_kind(surrogate: object) -> tuple[int, float]:
    """Map a SpikingJelly surrogate (or ``None``) to the kernel's ``(kind, alpha)``.

    Raises:
        SpecError: for a surrogate the kernels do not implement.
    """
    if surrogate is None:
        return 2, 0.0
    kind = SURROGATE_KINDS.get(type(surrogate).__name__)
    alpha = getattr(surrogate, "alpha", None)
    if kind is None or not isinstance(alpha, (int, float)):
        names = ", ".join(f"surrogate.{n}" for n in SURROGATE_KINDS)
        raise SpecError(
            f"backend='cupy' implements the surrogates {names} and None, got "
            f"{type(surrogate).__name__}; use one of those or backend='torch'"
        )
    return kind, float(alpha)


def _launch(launcher: Launcher, file: str, name: str, n: int, args: tuple[Any, ...]) -> None:
    """Launch kernel ``name`` over ``n`` neurons (one thread each, blocks of ``_THREADS``)."""
    for index, arg in enumerate(args):
        if isinstance(arg, Tensor) and (
            not arg.is_contiguous() or arg.device.type != launcher.device_type
        ):
            raise RuntimeError(
                f"{name}: argument {index} must be a contiguous {launcher.device_type} tensor, "
                f"got {tuple(arg.stride())} strides on {arg.device}"
            )
    blocks = math.ceil(n / _THREADS)
    if blocks:
        launcher.launch(file, name, blocks, _THREADS, args)


def _scalar(value: float, dtype: torch.dtype) -> Any:
    return numpy.float64(value) if dtype == torch.float64 else numpy.float32(value)


class _ICRateKernel(torch.autograd.Function):
    """``(x_seq [T, N], v_init [N]) -> (spikes [T, N], v_seq [T, N])`` on the CuPy kernels."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x_seq: Tensor,
        v_init: Tensor,
        theta: float,
        kind: int,
        alpha: float,
        launcher: Launcher,
    ) -> tuple[Tensor, Tensor]:
        steps, n = x_seq.shape
        suffix = _SUFFIX[x_seq.dtype]
        store_h = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        spikes = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x_seq)
        h_seq = torch.empty_like(x_seq) if store_h else v_seq
        _launch(
            launcher,
            "icrate.cu",
            f"icrate_forward_{suffix}",
            n,
            (
                x_seq,
                v_init,
                spikes,
                v_seq,
                h_seq,
                numpy.int32(int(store_h)),
                _scalar(theta, x_seq.dtype),
                numpy.int32(steps),
                numpy.int64(n),
            ),
        )
        if store_h:
            ctx.save_for_backward(h_seq)
        ctx.theta, ctx.kind, ctx.alpha, ctx.launcher = theta, kind, alpha, launcher
        return spikes, v_seq

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_spikes: Tensor | None, grad_v_seq: Tensor | None
    ) -> tuple[Tensor, Tensor, None, None, None, None]:
        (h_seq,) = ctx.saved_tensors
        steps, n = h_seq.shape
        grad_spikes = torch.zeros_like(h_seq) if grad_spikes is None else grad_spikes.contiguous()
        grad_v_seq = torch.zeros_like(h_seq) if grad_v_seq is None else grad_v_seq.contiguous()
        grad_x = torch.empty_like(h_seq)
        grad_v_init = torch.empty_like(h_seq[0])
        _launch(
            ctx.launcher,
            "icrate.cu",
            f"icrate_backward_{_SUFFIX[h_seq.dtype]}",
            n,
            (
                grad_spikes,
                grad_v_seq,
                h_seq,
                grad_x,
                grad_v_init,
                _scalar(ctx.theta, h_seq.dtype),
                numpy.int32(ctx.kind),
                numpy.float64(ctx.alpha),
                numpy.int32(steps),
                numpy.int64(n),
            ),
        )
        return grad_x, grad_v_init, None, None, None, None


class _SignedICRateKernel(torch.autograd.Function):
    """``(x_seq [T, N], v_init, count_init [N]) -> (spikes [T, N], v_seq [T, N], count [N])``
    for signed IC-rate neurons on the CuPy kernels; the count passes no gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x_seq: Tensor,
        v_init: Tensor,
        count_init: Tensor,
        theta: float,
        kind: int,
        alpha: float,
        launcher: Launcher,
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, n = x_seq.shape
        store_h = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        spikes = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x_seq)
        h_seq = torch.empty_like(x_seq) if store_h else v_seq
        count_last = torch.empty_like(count_init)
        _launch(
            launcher,
            "icrate.cu",
            f"icrate_signed_forward_{_SUFFIX[x_seq.dtype]}",
            n,
            (
                x_seq,
                v_init,
                count_init,
                spikes,
                v_seq,
                h_seq,
                count_last,
                numpy.int32(int(store_h)),
                _scalar(theta, x_seq.dtype),
                numpy.int32(steps),
                numpy.int64(n),
            ),
        )
        ctx.mark_non_differentiable(count_last)
        if store_h:
            # spikes and count_last: the backward rebuilds the count before each step (icrate.cu)
            ctx.save_for_backward(h_seq, spikes, count_last)
        ctx.theta, ctx.kind, ctx.alpha, ctx.launcher = theta, kind, alpha, launcher
        return spikes, v_seq, count_last

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_spikes: Tensor | None, grad_v_seq: Tensor | None, grad_count: object
    ) -> tuple[Tensor, Tensor, None, None, None, None, None]:
        h_seq, spikes, count_last = ctx.saved_tensors
        steps, n = h_seq.shape
        grad_spikes = torch.zeros_like(h_seq) if grad_spikes is None else grad_spikes.contiguous()
        grad_v_seq = torch.zeros_like(h_seq) if grad_v_seq is None else grad_v_seq.contiguous()
        grad_x = torch.empty_like(h_seq)
        grad_v_init = torch.empty_like(h_seq[0])
        _launch(
            ctx.launcher,
            "icrate.cu",
            f"icrate_signed_backward_{_SUFFIX[h_seq.dtype]}",
            n,
            (
                grad_spikes,
                grad_v_seq,
                h_seq,
                spikes,
                count_last,
                grad_x,
                grad_v_init,
                _scalar(ctx.theta, h_seq.dtype),
                numpy.int32(ctx.kind),
                numpy.float64(ctx.alpha),
                numpy.int32(steps),
                numpy.int64(n),
            ),
        )
        return grad_x, grad_v_init, None, None, None, None, None


class _RadixKernel(torch.autograd.Function):
    """``(x_seq [T, N], v, acc, k [N]) -> (spikes [T, N], v_seq [T, N], acc, k [N])``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x_seq: Tensor,
        v_init: Tensor,
        acc_init: Tensor,
        k_init: Tensor,
        thresholds: Tensor,
        spec: Radix,
        kind: int,
        alpha: float,
        launcher: Launcher,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        steps, n = x_seq.shape
        spikes = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x_seq)
        acc_last = torch.empty_like(acc_init)
        k_last = torch.empty_like(k_init)
        _launch(
            launcher,
            "radix.cu",
            f"radix_forward_{_SUFFIX[x_seq.dtype]}",
            n,
            (
                x_seq,
                v_init,
                acc_init,
                k_init,
                thresholds,
                spikes,
                v_seq,
                acc_last,
                k_last,
                *_radix_scalars(spec, x_seq.dtype),
                numpy.int32(steps),
                numpy.int64(n),
            ),
        )
        ctx.mark_non_differentiable(k_last)
        ctx.save_for_backward(x_seq, v_init, v_seq, k_init, thresholds)
        ctx.spec, ctx.kind, ctx.alpha, ctx.launcher = spec, kind, alpha, launcher
        return spikes, v_seq, acc_last, k_last

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_spikes: Tensor, grad_v_seq: Tensor, grad_acc: Tensor, grad_k: object
    ) -> tuple[Tensor, Tensor, Tensor, None, None, None, None, None, None]:
        x_seq, v_init, v_seq, k_init, thresholds = ctx.saved_tensors
        steps, n = x_seq.shape
        grad_x = torch.empty_like(x_seq)
        grad_v_init = torch.empty_like(v_init)
        grad_acc_init = torch.empty_like(v_init)
        dtype = x_seq.dtype
        _launch(
            ctx.launcher,
            "radix.cu",
            f"radix_backward_{_SUFFIX[dtype]}",
            n,
            (
                grad_spikes.contiguous(),
                grad_v_seq.contiguous(),
                grad_acc.contiguous(),
                x_seq,
                v_init,
                v_seq,
                k_init,
                thresholds,
                grad_x,
                grad_v_init,
                grad_acc_init,
                *_radix_scalars(ctx.spec, dtype),
                numpy.int32(ctx.kind),
                numpy.float64(ctx.alpha),
                numpy.int32(steps),
                numpy.int64(n),
            ),
        )
        return grad_x, grad_v_init, grad_acc_init, None, None, None, None, None, None


def _radix_scalars(spec: Radix, dtype: torch.dtype) -> tuple[Any, ...]:
    """``(paper, base, substeps, window, leak, fire_level)`` of ``radix.cu``: the constants of
    ``radix_step``, computed as it computes them (the float ones as the Python scalars it uses)."""
    return (
        numpy.int32(int(spec.mode == "paper")),
        numpy.int64(spec.base),
        numpy.int64(spec.substeps),
        numpy.int64(spec.steps_per_layer),
        _scalar(spec.leak_factor, dtype),
        _scalar(spec.normalised_threshold * spec.base, dtype),
    )


def _resolve(launcher: Launcher | None) -> Launcher:
    return current_launcher() if launcher is None else launcher


def _check_tensors(currents: Tensor, state: tuple[Tensor, ...], launcher: Launcher) -> None:
    """Check that ``currents`` is ``(T, *S)`` and every state field is ``S``, all on the
    launcher's device type."""
    shapes = [tuple(field.shape) for field in state]
    if currents.dim() < 2 or any(shape != tuple(currents.shape[1:]) for shape in shapes):
        raise SpecError(
            f"backend='cupy': currents {tuple(currents.shape)} must be (T, *state shape) with "
            f"every state field of that shape, got state shapes {shapes}"
        )
    if currents.dtype not in _SUFFIX:
        raise SpecError(
            f"backend='cupy' supports float16, float32 and float64, got {currents.dtype}; "
            "cast the input or use backend='torch'"
        )
    wanted = launcher.device_type
    if any(tensor.device.type != wanted for tensor in (currents, *state)):
        devices = ", ".join(str(field.device) for field in state)
        where = "CUDA" if wanted == "cuda" else wanted.upper()
        raise SpecError(
            f"backend='cupy' needs {where} tensors, got currents on {currents.device} and the "
            f"state on {devices}; move the module and its input to the GPU or use "
            "backend='torch'"
        )


def icrate_multi_step(
    currents: Tensor,
    v: Tensor,
    threshold: float,
    surrogate: object = None,
    *,
    launcher: Launcher | None = None,
) -> tuple[Tensor, Tensor]:
    """Run IC-rate neurons over ``currents`` ``(T, B, *)`` from membrane ``v`` ``(B, *)``.

    The CuPy counterpart of :func:`snn_encodings.functional.simulate` for an
    :class:`~snn_encodings.specs.ICRate` spec (reference: ``icrate_step``), with a
    surrogate-gradient backward (SpikingJelly ``surrogate.Sigmoid``/``ATan`` or ``None``).
    ``launcher`` runs the kernel (default: :func:`current_launcher`).

    Returns:
        ``(spikes, membranes)``, both ``(T, B, *)``: spikes in ``{0, 1}`` and the membrane after
        every step, equal to the torch reference exactly (the kernel mirrors each rounding of
        the torch ops); gradients equal autograd through ``icrate_step`` (bit for bit except,
        on the CPU, the Sigmoid surrogate's exp; docs/kernels.md).
    Raises:
        SpecError: for tensors on another device than the launcher's, unsupported dtypes,
            mismatched shapes or surrogates.
        RuntimeError: when CuPy or a GPU is missing.
    """
    launcher = _resolve(launcher)
    _check_tensors(currents, (v,), launcher)
    kind, alpha = surrogate_kind(surrogate)
    steps = currents.shape[0]
    x_seq = currents.reshape(steps, -1).contiguous()
    v_init = v.to(currents.dtype).reshape(-1).contiguous()
    spikes, v_seq = _ICRateKernel.apply(x_seq, v_init, float(threshold), kind, alpha, launcher)
    return spikes.reshape(currents.shape), v_seq.reshape(currents.shape)


def signed_icrate_multi_step(
    currents: Tensor,
    v: Tensor,
    count: Tensor,
    threshold: float,
    surrogate: object = None,
    *,
    launcher: Launcher | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run signed IC-rate neurons over ``currents`` ``(T, B, *)`` from membrane ``v`` and net
    spike count ``count`` (both ``(B, *)``, the fields of ``SignedICRateState``).

    The CuPy counterpart of :func:`snn_encodings.functional.simulate` for an
    ``ICRate(signed=True)`` spec (reference: ``icrate_step``, which takes a spike back where
    the membrane falls below zero while the count is positive), with a surrogate-gradient
    backward (SpikingJelly ``surrogate.Sigmoid``/``ATan`` or ``None``). ``launcher`` as in
    :func:`icrate_multi_step`.

    Returns:
        ``(spikes, membranes, count)``: spikes in ``{-1, 0, 1}`` and the membrane after every
        step, both ``(T, B, *)``, and the final count ``(B, *)`` (no gradient), all in the
        dtype of ``currents`` and equal to the torch reference exactly; gradients of
        ``currents`` and ``v`` equal autograd through ``icrate_step`` (bit for bit except, on
        the CPU, the Sigmoid surrogate's exp; docs/kernels.md).
    Raises:
        SpecError: for tensors on another device than the launcher's, unsupported dtypes,
            mismatched shapes or surrogates.
        RuntimeError: when CuPy or a GPU is missing.
    """
    launcher = _resolve(launcher)
    _check_tensors(currents, (v, count), launcher)
    kind, alpha = surrogate_kind(surrogate)
    steps = currents.shape[0]
    spikes, v_seq, count_last = _SignedICRateKernel.apply(
        currents.reshape(steps, -1).contiguous(),
        v.to(currents.dtype).reshape(-1).contiguous(),
        count.to(currents.dtype).reshape(-1).contiguous(),
        float(threshold),
        kind,
        alpha,
        launcher,
    )
    shape = currents.shape
    return spikes.reshape(shape), v_seq.reshape(shape), count_last.reshape(shape[1:])


def quartz_multi_step(
    currents: Tensor,
    state: tuple[Tensor, ...],
    spec: Quartz,
    *,
    rectify: bool | None = None,
    launcher: Launcher | None = None,
) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """Run Quartz neurons over ``currents`` ``(T, B, *)`` from the state ``(v, i, t, fired)``.

    The CuPy counterpart of :func:`snn_encodings.functional.simulate` for a
    :class:`~snn_encodings.specs.Quartz` spec in either mode (reference: ``quartz_step``; in
    exact mode no spike before ``spec.first_fire_step``), forward only. ``t`` counts steps from
    the window's start.

    Returns:
        ``(spikes, final_state, membranes)``: spikes and the membrane after every step
        ``(T, B, *)``, and the final state as a ``QuartzState``-ordered tuple; all equal to the
        torch reference exactly. ``launcher`` as in :func:`icrate_multi_step`.
    Raises:
        SpecError: for tensors on another device than the launcher's, unsupported dtypes,
            mismatched shapes, or a run that needs gradients (use ``backend='torch'`` to train).
        RuntimeError: when CuPy or a GPU is missing.
    """
    v, i, t, fired = state
    launcher = _resolve(launcher)
    _check_tensors(currents, state, launcher)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (currents, v, i)):
        raise SpecError(
            "backend='cupy' runs Quartz neurons forward only (no surrogate gradient); use "
            "backend='torch' to train, or run under torch.no_grad()"
        )
    steps = currents.shape[0]
    x_seq = currents.reshape(steps, -1).contiguous()
    n = x_seq.shape[1]
    flat = [
        v.to(currents.dtype).reshape(-1).contiguous(),
        i.to(currents.dtype).reshape(-1).contiguous(),
        t.to(torch.int64).reshape(-1).contiguous(),
        fired.to(torch.uint8).reshape(-1).contiguous(),
    ]
    spikes = torch.empty_like(x_seq)
    v_seq = torch.empty_like(x_seq)
    i_last = torch.empty_like(flat[1])
    t_last = torch.empty_like(flat[2])
    fired_last = torch.empty_like(flat[3])
    use_rectifier = spec.rectify if rectify is None else rectify
    _launch(
        launcher,
        "quartz.cu",
        f"quartz_forward_{_SUFFIX[x_seq.dtype]}",
        n,
        (
            x_seq,
            *flat,
            spikes,
            v_seq,
            i_last,
            t_last,
            fired_last,
            _scalar(spec.threshold, x_seq.dtype),
            numpy.int64(spec.read_step),
            numpy.int64(spec.first_fire_step),
            numpy.int64(spec.rectify_step),
            numpy.int32(int(use_rectifier)),
            numpy.int32(steps),
            numpy.int64(n),
        ),
    )
    shape = currents.shape
    membranes = v_seq.reshape(shape)
    final = (
        membranes[-1],
        i_last.reshape(shape[1:]),
        t_last.reshape(shape[1:]),
        fired_last.reshape(shape[1:]).to(torch.bool),
    )
    return spikes.reshape(shape), final, membranes


def radix_multi_step(
    currents: Tensor,
    state: tuple[Tensor, ...],
    spec: Radix,
    surrogate: object = None,
    *,
    launcher: Launcher | None = None,
) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """Run radix neurons over ``currents`` ``(T, B, *)`` from the state ``(v, acc, k)``.

    The CuPy counterpart of :func:`snn_encodings.functional.simulate` for a
    :class:`~snn_encodings.specs.Radix` spec in either mode (reference: ``radix_step``), with
    a surrogate-gradient backward (SpikingJelly ``surrogate.Sigmoid``/``ATan`` or ``None``).
    ``v`` and ``acc`` are in the units of ``RadixState`` (exact mode: :math:`r^{-T}`; paper
    mode: the current digit), ``k`` counts steps.

    Returns:
        ``(spikes, final_state, membranes)``: spikes and the membrane after every step
        ``(T, B, *)``, and the final state as a ``RadixState``-ordered tuple; all equal to the
        torch reference exactly; gradients equal autograd through ``radix_step`` (bit for bit
        except, on the CPU, the Sigmoid surrogate's exp; docs/kernels.md). ``launcher`` as
        in :func:`icrate_multi_step`.
    Raises:
        SpecError: for tensors on another device than the launcher's, unsupported dtypes,
            mismatched shapes or surrogates, or leak/threshold other than :math:`1/r`.
        RuntimeError: when CuPy or a GPU is missing.
    """
    if not spec.is_radix_setting:
        raise SpecError(
            f"backend='cupy': the radix neuron needs leak = threshold = 1/base, got "
            f"leak={spec.leak_factor:g}, threshold={spec.normalised_threshold:g}; leave "
            "Radix.leak and Radix.threshold at None"
        )
    kind, alpha = surrogate_kind(surrogate)
    v, acc, k = state
    launcher = _resolve(launcher)
    _check_tensors(currents, state, launcher)
    steps = currents.shape[0]
    x_seq = currents.reshape(steps, -1).contiguous()
    spikes, v_seq, acc_last, k_last = _RadixKernel.apply(
        x_seq,
        v.to(currents.dtype).reshape(-1).contiguous(),
        acc.to(currents.dtype).reshape(-1).contiguous(),
        k.to(torch.int64).reshape(-1).contiguous(),
        radix_digit_thresholds(spec, x_seq),
        spec,
        kind,
        alpha,
        launcher,
    )
    shape = currents.shape
    membranes = v_seq.reshape(shape)
    final = (membranes[-1], acc_last.reshape(shape[1:]), k_last.reshape(shape[1:]))
    return spikes.reshape(shape), final, membranes


def multi_step(
    spec: Spec,
    currents: Tensor,
    state: tuple[Any, ...],
    surrogate: object = None,
    *,
    launcher: Launcher | None = None,
) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """Run ``spec``'s kernel over ``currents`` ``(T, B, *)`` from the core state tuple ``state``
    (``launcher`` as in :func:`icrate_multi_step`).

    Returns:
        ``(spikes, final_state, membranes)``: spikes and membranes ``(T, B, *)``, and the final
        state as a tuple in the order of the encoding's ``State`` fields (``(v, count)`` for
        signed IC-rate neurons, as ``SignedICRateState``).
    Raises:
        SpecError: if the encoding has no kernel, if a signed IC-rate state is not
            ``(v, count)``, or for bad tensors (see :func:`icrate_multi_step`).
    """
    kernel = KERNEL_SOURCES.get(type(spec)) if has_kernel(spec) else None
    if kernel == "icrate.cu" and getattr(spec, "signed", False):
        if len(state) != 2:
            raise SpecError(
                f"backend='cupy': signed IC-rate neurons need the state (v, count) of "
                f"SignedICRateState, got {len(state)} field(s); start from "
                "icrate_initial_state(spec, like)"
            )
        spikes, membranes, count = signed_icrate_multi_step(
            currents, state[0], state[1], spec.threshold, surrogate, launcher=launcher
        )
        return spikes, (membranes[-1], count), membranes
    if kernel == "icrate.cu":
        spikes, membranes = icrate_multi_step(
            currents, state[0], spec.threshold, surrogate, launcher=launcher
        )
        return spikes, (membranes[-1],), membranes
    if kernel == "radix.cu":
        return radix_multi_step(currents, state, spec, surrogate, launcher=launcher)
    if kernel == "quartz.cu":
        return quartz_multi_step(currents, state, spec, launcher=launcher)
    raise SpecError(f"backend='cupy' has no kernel for {spec!r}")
