"""Our own CuPy multi-step kernels for the SpikingJelly nodes, with their torch glue.

The CUDA sources live next to this file (``<encoding>.cu``, sharing the storage helpers of
``common.cuh``, which :func:`source` inlines) and are compiled at first use with NVRTC through
``cupy.RawModule``. Each kernel runs one thread per neuron and loops over the ``T`` steps of a
time-first ``[T, N]`` block. IC-rate and radix (both modes) have a forward and a
surrogate-gradient backward kernel; Quartz (both modes) a forward kernel only (inference: a run
that needs gradients raises). The core torch step function is the reference: each forward
kernel repeats its operations with the same rounding, and a test compares it with
:func:`snn_encodings.functional.simulate` spike for spike and membrane for membrane.

The last step of every call, the launch, is a small injectable backend (a :class:`Launcher`):
:data:`CUPY` (the default) runs the kernels on CUDA tensors; :data:`EMULATED` compiles the very
same sources with a C++ compiler (``g++``; ``common.cuh`` gives the CUDA keywords and float16
conversions a host twin) and runs every block x thread of the grid on CPU tensors. Everything
before the launch (flattening, dtype dispatch, argument order and scalar types, the autograd
Functions) is shared, so the emulated launch checks it too; the tests compare it with the torch
step on any machine with ``g++``. Select it with ``with use_launcher(EMULATED): ...`` or the
``launcher=`` argument.

Nothing here imports cupy at module import time, so the package imports on machines without
CUDA; :func:`require_cupy` raises a clear error when a kernel is asked for there.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any

import numpy
import torch
from torch import Tensor

from snn_encodings.errors import SpecError
from snn_encodings.functional.radix import radix_digit_thresholds
from snn_encodings.specs import ICRate, Quartz, Radix
from snn_encodings.specs.base import Spec

_DTYPES = ("f16", "f32", "f64")

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
    "icrate_multi_step",
    "multi_step",
    "quartz_multi_step",
    "radix_multi_step",
    "require_cupy",
    "source",
    "host_source",
    "surrogate_kind",
    "use_launcher",
]

KERNEL_SOURCES: dict[type[Spec], str] = {
    ICRate: "icrate.cu",
    Radix: "radix.cu",
    Quartz: "quartz.cu",
}
"""Spec class -> CUDA source file of its multi-step kernels."""

KERNEL_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "icrate.cu": tuple(f"icrate_{kind}_{d}" for kind in ("forward", "backward") for d in _DTYPES),
    "radix.cu": tuple(f"radix_{kind}_{d}" for kind in ("forward", "backward") for d in _DTYPES),
    "quartz.cu": tuple(f"quartz_forward_{d}" for d in _DTYPES),
}
"""CUDA source file -> the kernel entry points it defines (``<name>_<kind>_<f16|f32|f64>``)."""

COMPILE_OPTIONS: tuple[str, ...] = ("-fmad=false",)
"""NVRTC options: no FMA contraction and no fast-math, so results equal torch's elementwise ops."""

HOST_COMPILE_OPTIONS: tuple[str, ...] = (
    "-std=c++17",
    "-O2",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-shared",
    "-fPIC",
)
"""C++ compiler options of the emulated launch: as NVRTC's, no FMA contraction, no fast-math."""

SURROGATE_KINDS: dict[str, int] = {"Sigmoid": 0, "ATan": 1}
"""SpikingJelly surrogate class name -> the kernel's surrogate derivative code (2 = none)."""

_SUFFIX = {torch.float16: "f16", torch.float32: "f32", torch.float64: "f64"}
_THREADS = 256


def source(name: str) -> str:
    """Return the CUDA source text of the kernel file ``name`` (e.g. ``"icrate.cu"``), with
    each ``#include "common.cuh"`` line replaced by that file's text (NVRTC gets one string)."""
    folder = resources.files(__package__)
    text = folder.joinpath(name).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    common = '#include "common.cuh"'
    return "".join(
        folder.joinpath("common.cuh").read_text(encoding="utf-8")
        if line.strip() == common
        else line
        for line in lines
    )


def has_kernel(spec: Spec) -> bool:
    """Whether ``spec``'s encoding has a CuPy multi-step kernel."""
    return type(spec) in KERNEL_SOURCES


def compile_ptx(name: str, arch: str = "compute_90") -> str:
    """Compile the kernel file ``name`` to PTX with NVRTC; needs no GPU (a source check).

    Raises:
        RuntimeError: with NVRTC's log when the source does not compile, or when the NVRTC
            library is missing (``pip install nvidia-cuda-nvrtc-cu12``).
    """
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as error:
        raise RuntimeError('compile_ptx needs cupy: pip install "snn-encodings[cupy]"') from error
    program = nvrtc.createProgram(source(name), name, [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}", *COMPILE_OPTIONS])
    except nvrtc.NVRTCError as error:
        log = nvrtc.getProgramLog(program)
        raise RuntimeError(f"kernels/{name} does not compile with NVRTC:\n{log}") from error
    ptx = nvrtc.getPTX(program)
    return ptx.decode() if isinstance(ptx, bytes) else str(ptx)


def require_cupy() -> Any:
    """Return the ``cupy`` module if it is installed and sees a CUDA GPU.

    Raises:
        RuntimeError: naming what to install or do otherwise.
    """
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(
            "backend='cupy' needs CuPy and a CUDA GPU: pip install \"snn-encodings[cupy]\" "
            "(cupy-cuda12x), or use backend='torch'"
        ) from error
    if not cupy.cuda.is_available() or not torch.cuda.is_available():
        raise RuntimeError(
            "backend='cupy' needs a CUDA GPU visible to both CuPy and torch (none found here); "
            "use backend='torch' on this machine"
        )
    return cupy


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


class Launcher:
    """The launch step of every kernel call: runs ``name`` of ``file`` over a 1-D grid.

    Attributes:
        device_type: the torch device type of the tensors it runs on (``"cuda"``, ``"cpu"``).
    """

    device_type: str = ""

    def launch(
        self, file: str, name: str, blocks: int, threads: int, args: tuple[Any, ...]
    ) -> None:
        """Run kernel ``name`` of ``file`` with ``blocks`` x ``threads`` threads on ``args``
        (contiguous tensors of :attr:`device_type` and numpy scalars, in the kernel's order)."""
        raise NotImplementedError


class CupyLauncher(Launcher):
    """Launch through CuPy (NVRTC ``RawModule``) on the current CUDA stream of the tensors."""

    device_type = "cuda"

    def __init__(self) -> None:
        self._modules: dict[tuple[str, int], Any] = {}

    def launch(
        self, file: str, name: str, blocks: int, threads: int, args: tuple[Any, ...]
    ) -> None:
        cupy = require_cupy()
        reference = next(a for a in args if isinstance(a, Tensor))
        device = reference.device.index if reference.device.index is not None else 0
        key = (file, device)
        if key not in self._modules:
            with cupy.cuda.Device(device):
                self._modules[key] = cupy.RawModule(code=source(file), options=COMPILE_OPTIONS)
        kernel = self._modules[key].get_function(name)
        stream = torch.cuda.current_stream(reference.device).cuda_stream
        packed = tuple(cupy.from_dlpack(a) if isinstance(a, Tensor) else a for a in args)
        with cupy.cuda.Device(device), cupy.cuda.ExternalStream(stream):
            kernel((blocks,), (threads,), packed)


_CTYPES = {
    numpy.int32: (ctypes.c_int32, "i4"),
    numpy.int64: (ctypes.c_int64, "i8"),
    numpy.float32: (ctypes.c_float, "f4"),
    numpy.float64: (ctypes.c_double, "f8"),
}


class EmulatedLauncher(Launcher):
    """Run the kernels on CPU tensors: each source compiled with a C++ compiler (``$CXX`` or
    ``g++``) as :func:`host_source` gives it, loaded with ctypes, every block x thread run in
    turn. For verification (one CPU thread), not speed.

    Compiled libraries are cached in ``$SNN_ENCODINGS_CACHE/kernels-host`` (else a folder in
    the temp directory), named by a hash of the source, the options and the compiler, and
    written atomically, so concurrent processes can share the folder.
    """

    device_type = "cpu"

    def __init__(self) -> None:
        self._libraries: dict[str, ctypes.CDLL] = {}
        self._lock = threading.Lock()

    def library(self, file: str) -> ctypes.CDLL:
        """The loaded CPU build of kernel file ``file``, compiled at first use.

        Raises:
            RuntimeError: when no C++ compiler is found or the source does not compile.
        """
        with self._lock:
            if file not in self._libraries:
                self._libraries[file] = ctypes.CDLL(str(_compile_host(file)))
            return self._libraries[file]

    def launch(
        self, file: str, name: str, blocks: int, threads: int, args: tuple[Any, ...]
    ) -> None:
        library = self.library(file)
        values, codes = [], []
        for arg in args:
            if isinstance(arg, Tensor):
                values.append(ctypes.c_void_p(arg.data_ptr()))
                codes.append(f"p{arg.element_size()}")
            elif type(arg) in _CTYPES:
                ctype, code = _CTYPES[type(arg)]
                values.append(ctype(arg.item()))
                codes.append(code)
            else:
                raise TypeError(f"{name}: argument {len(values)} is a {type(arg).__name__}")
        signature = getattr(library, f"{name}_signature")
        signature.restype = ctypes.c_char_p
        expected = signature().decode()
        if " ".join(codes) != expected:
            raise RuntimeError(
                f"{file}: {name} takes ({expected}) but was launched with ({' '.join(codes)})"
            )
        argv = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        grid = getattr(library, f"{name}_grid")
        grid.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        grid(blocks, threads, argv)


CUPY = CupyLauncher()
"""The GPU launcher (the default)."""

EMULATED = EmulatedLauncher()
"""The CPU launcher: the same kernel sources compiled for the host (verification)."""

_launcher: ContextVar[Launcher] = ContextVar("snn_encodings_kernel_launcher", default=CUPY)


def current_launcher() -> Launcher:
    """The launcher the kernel functions use when none is passed (:data:`CUPY` by default)."""
    return _launcher.get()


@contextmanager
def use_launcher(launcher: Launcher) -> Iterator[Launcher]:
    """Make ``launcher`` the default of the kernel functions inside the ``with`` block.

    Example:
        >>> with use_launcher(EMULATED):
        ...     current_launcher() is EMULATED
        True
    """
    token = _launcher.set(launcher)
    try:
        yield launcher
    finally:
        _launcher.reset(token)


def host_source(name: str) -> str:
    """The CPU build of kernel file ``name``: :func:`source` unchanged, then
    ``host_launch.cuh`` and one ``EMULATED_ENTRY`` per kernel of :data:`KERNEL_FUNCTIONS`."""
    folder = resources.files(__package__)
    entries = "".join(f"EMULATED_ENTRY({kernel})\n" for kernel in KERNEL_FUNCTIONS[name])
    launch = folder.joinpath("host_launch.cuh").read_text(encoding="utf-8")
    return f"{source(name)}\n{launch}\n{entries}"


def _host_compiler() -> str:
    compiler = shutil.which(os.environ.get("CXX") or "g++")
    if compiler is None:
        raise RuntimeError(
            "the emulated kernel launch needs a C++ compiler: install g++ (or set CXX)"
        )
    return compiler


def _compile_host(name: str) -> Path:
    """Compile :func:`host_source` of ``name`` into the cache, atomically; return the library."""
    compiler = _host_compiler()
    text = host_source(name)
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout
    digest = hashlib.sha256(
        "\0".join([text, *HOST_COMPILE_OPTIONS, compiler, version]).encode()
    ).hexdigest()[:20]
    root = os.environ.get("SNN_ENCODINGS_CACHE") or tempfile.gettempdir()
    folder = Path(root) / "kernels-host"
    target = folder / f"{name.removesuffix('.cu')}-{digest}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        cpp = Path(scratch) / f"{name}.cpp"
        cpp.write_text(text, encoding="utf-8")
        built = Path(scratch) / target.name
        result = subprocess.run(
            [compiler, *HOST_COMPILE_OPTIONS, "-o", str(built), str(cpp)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kernels/{name} does not compile for the CPU:\n{result.stderr}")
        os.replace(built, target)
    return target


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
    :class:`~snn_encodings.specs.ICRate` spec (reference: ``icrate_step``).

    Returns:
        ``(spikes, membranes)``, both ``(T, B, *)``: spikes in ``{0, 1}`` and the membrane after
        every step, equal to the torch reference (spikes exactly; membranes exactly too, since
        the kernel mirrors each rounding of the torch ops).
    ``launcher`` runs the kernel (default: :func:`current_launcher`).

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
        torch reference exactly (gradients within rounding). ``launcher`` as in
        :func:`icrate_multi_step`.
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
        state as a tuple in the order of the encoding's ``State`` fields.
    Raises:
        SpecError: if the encoding has no kernel, or for bad tensors (see
            :func:`icrate_multi_step`).
    """
    if isinstance(spec, ICRate):
        spikes, membranes = icrate_multi_step(
            currents, state[0], spec.threshold, surrogate, launcher=launcher
        )
        return spikes, (membranes[-1],), membranes
    if isinstance(spec, Radix):
        return radix_multi_step(currents, state, spec, surrogate, launcher=launcher)
    if isinstance(spec, Quartz):
        return quartz_multi_step(currents, state, spec, launcher=launcher)
    raise SpecError(f"backend='cupy' has no kernel for {type(spec).__name__}")
