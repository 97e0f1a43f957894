"""Launching the kernels: on a GPU through CuPy, or emulated on the CPU with the same sources.

A :class:`Launcher` is the last step of every kernel call in :mod:`.` (the package): it gets a
kernel name, a 1-D grid and the packed arguments. :data:`CUPY` compiles the sources with NVRTC
and launches them on CUDA tensors. :data:`EMULATED` compiles the very same sources with a C++
compiler (``common.cuh`` gives the CUDA keywords and the float16 conversions a host twin;
``host_launch.cuh`` adds the grid loop), loads them with ctypes and runs every block x thread
on CPU tensors, checking each argument's type against the kernel's parameter list.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any

import numpy
import torch
from torch import Tensor

__all__ = [
    "COMPILE_OPTIONS",
    "CUPY",
    "EMULATED",
    "HOST_COMPILE_OPTIONS",
    "KERNEL_FUNCTIONS",
    "CupyLauncher",
    "EmulatedLauncher",
    "Launcher",
    "compile_ptx",
    "current_launcher",
    "host_source",
    "require_cupy",
    "source",
    "use_launcher",
]

_DTYPES = ("f16", "f32", "f64")

KERNEL_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "icrate.cu": tuple(
        f"icrate_{kind}_{d}"
        for kind in ("forward", "backward", "signed_forward", "signed_backward")
        for d in _DTYPES
    ),
    "radix.cu": tuple(f"radix_{kind}_{d}" for kind in ("forward", "backward") for d in _DTYPES),
    "quartz.cu": tuple(f"quartz_forward_{d}" for d in _DTYPES),
}
"""CUDA source file -> the kernel entry points it defines (``<name>_<kind>_<f16|f32|f64>``;
IC-rate's ``signed_*`` kinds run ``ICRate(signed=True)``)."""

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


class Launcher(ABC):
    """The launch step of every kernel call: runs ``name`` of ``file`` over a 1-D grid.

    Attributes:
        device_type: the torch device type of the tensors it runs on (``"cuda"``, ``"cpu"``).
    """

    device_type: str = ""

    @abstractmethod
    def launch(
        self, file: str, name: str, blocks: int, threads: int, args: tuple[Any, ...]
    ) -> None:
        """Run kernel ``name`` of ``file`` with ``blocks`` x ``threads`` threads on ``args``
        (contiguous tensors of :attr:`device_type` and numpy scalars, in the kernel's order)."""


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
