"""Time our CuPy multi-step kernels against our torch path and SpikingJelly's own IFNode.

Needs a CUDA GPU with CuPy (``pip install "snn-encodings[spikingjelly,cupy]"``); on a machine
without one it exits with a message saying so. For each case of ``CASES`` (IC-rate, radix in
exact and paper mode, Quartz in exact mode), each dtype, sequence length T in ``--steps``
(default 4, 8, 32) and batch in ``--batches`` (default 32, 256; 1024 features per sample) it
checks that the kernel's spikes equal the core's, then measures the forward time of one
multi-step call (median of CUDA-event timings after warm-up) for:

- ``cupy``: our node with ``backend="cupy"`` (one kernel launch);
- ``torch``: our node with ``backend="torch"`` (the core ``simulate`` loop);
- ``sj_torch`` and ``sj_triton``: SpikingJelly's ``neuron.IFNode(v_reset=None)`` in ``'m'``
  mode on the same input, with ``SJ_IF_CUDA_IMPLEMENTATION=torch`` and ``=triton``.
  SpikingJelly 2.x has no CuPy backend any more; Triton is its fused GPU path. It reads the
  variable when it is imported, so each is timed in a child process of this script.

It prints every time and the ratios ``cupy / sj_torch`` and ``cupy / sj_triton`` (below 1: our
kernel is faster than SpikingJelly's IF neuron), and writes
``benchmarks/results/kernels_<device>.csv`` (device name in the file name and every row).
The spec of a case depends on T: ``ICRate(steps=T)``, ``Quartz(t_max=max(1, T // 4))`` (one
window) and ``Radix(steps=8)`` (radix windows of 8 digits). Usage:
``python benchmarks/kernels.py [--repeats 50] [--cases ICRate Radix ...] [--steps 4 8 32]``.
docs/kernels.md gives the one command that runs the GPU tests and then this benchmark.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from snn_encodings.specs import ICRate, Quartz, Radix
from snn_encodings.specs.base import Spec

FEATURES = 1024
DTYPES = {"float32": torch.float32, "float16": torch.float16}
RADIX_DIGITS = 8
SJ_IMPLEMENTATIONS = ("torch", "triton")

CASES: dict[str, Callable[[int], Spec]] = {
    "ICRate": lambda steps: ICRate(steps=steps),
    "Radix": lambda steps: Radix(steps=RADIX_DIGITS),
    "Radix-paper": lambda steps: Radix(steps=RADIX_DIGITS, mode="paper"),
    "Quartz": lambda steps: Quartz(t_max=max(1, steps // 4)),
}
"""Benchmark case -> the spec it runs for a sequence of ``steps`` time steps."""


def _time(fn, currents: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of ``fn(currents)`` over ``repeats`` runs, after 5 warm-up runs."""
    for _ in range(5):
        fn(currents)
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(currents)
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def _runner(module: torch.nn.Module):
    from spikingjelly.activation_based import functional

    def run(currents: torch.Tensor) -> torch.Tensor:
        functional.reset_net(module)
        with torch.no_grad():
            return module(currents)

    return run


def _currents(steps: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator(device="cuda").manual_seed(0)
    shape = (steps, batch, FEATURES)
    return torch.rand(shape, generator=generator, device="cuda").to(dtype)


def _grid(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    return [(d, s, b) for d in DTYPES for s in args.steps for b in args.batches]


def _time_sj_ifnode(args: argparse.Namespace) -> dict[str, float]:
    """The child process: time IFNode on every (dtype, T, batch); key ``"dtype,T,batch"``."""
    from spikingjelly.activation_based import neuron

    times = {}
    for dtype_name, steps, batch in _grid(args):
        node = neuron.IFNode(v_reset=None, step_mode="m").cuda()
        currents = _currents(steps, batch, DTYPES[dtype_name])
        times[f"{dtype_name},{steps},{batch}"] = _time(_runner(node), currents, args.repeats)
    return times


def _sj_times(args: argparse.Namespace, implementation: str) -> dict[str, float] | str:
    """IFNode times with ``SJ_IF_CUDA_IMPLEMENTATION=implementation``, or why there are none."""
    command = [sys.executable, __file__, "--sj-ifnode", "--repeats", str(args.repeats)]
    command += ["--steps", *map(str, args.steps), "--batches", *map(str, args.batches)]
    env = {**os.environ, "SJ_IF_CUDA_IMPLEMENTATION": implementation}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _time_ours(args: argparse.Namespace, case: str, key: tuple[str, int, int]) -> dict:
    """Check our kernel against the core on one input, then time both of our backends."""
    from snn_encodings.adapters.spikingjelly import NEURONS
    from snn_encodings.testing import run_core

    dtype_name, steps, batch = key
    spec = CASES[case](steps)
    currents = _currents(steps, batch, DTYPES[dtype_name])
    ours = {
        backend: NEURONS[type(spec)](spec, step_mode="m", backend=backend).cuda()
        for backend in ("cupy", "torch")
    }
    if not torch.equal(_runner(ours["cupy"])(currents), run_core(spec, currents).spikes):
        raise SystemExit(f"kernel != torch reference for {spec!r} {dtype_name}")
    times = {name: _time(_runner(node), currents, args.repeats) for name, node in ours.items()}
    return {"spec": repr(spec), **times}


def _report(case: str, key: tuple[str, int, int], measured: dict) -> None:
    """Print one line: every time, then our kernel's time over each SpikingJelly time."""
    dtype_name, steps, batch = key
    times = {k: v for k, v in measured.items() if k != "spec"}
    ratios = {f"cupy/{k}": measured["cupy"] / v for k, v in times.items() if k.startswith("sj_")}
    print(
        f"{case} {dtype_name} T={steps} B={batch}: "
        + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items())
        + "".join(f"; {k} = {v:.2f}" for k, v in ratios.items())
    )


def _csv_rows(device: str, case: str, key: tuple[str, int, int], measured: dict) -> list[dict]:
    dtype_name, steps, batch = key
    paths = [k for k in measured if k != "spec"]
    return [
        {
            "device": device,
            "encoding": case,
            "spec": measured["spec"],
            "dtype": dtype_name,
            "steps": steps,
            "batch": batch,
            "features": FEATURES,
            "path": path,
            "median_ms": f"{measured[path]:.4f}",
            "cupy_ratio": f"{measured['cupy'] / measured[path]:.3f}",
        }
        for path in paths
    ]


def _rows(args: argparse.Namespace, device_name: str) -> list[dict]:
    sj = {name: _sj_times(args, name) for name in SJ_IMPLEMENTATIONS}
    for name, times in sj.items():
        if isinstance(times, str):
            print(f"SpikingJelly IFNode ({name}) not timed: {times}", file=sys.stderr)
    timed = {name: times for name, times in sj.items() if not isinstance(times, str)}
    rows = []
    for case in args.cases:
        for key in _grid(args):
            measured = _time_ours(args, case, key)
            label = ",".join(map(str, key))
            measured.update({f"sj_{name}": times[label] for name, times in timed.items()})
            _report(case, key, measured)
            rows += _csv_rows(device_name, case, key, measured)
    return rows


def _write(rows: list[dict], folder: Path, device_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_").lower()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"kernels_{slug}.csv"
    with tempfile.NamedTemporaryFile(
        "w", dir=folder, suffix=".tmp", delete=False, newline=""
    ) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(handle.name, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per measurement")
    parser.add_argument(
        "--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to time"
    )
    parser.add_argument("--steps", nargs="+", type=int, default=[4, 8, 32], help="values of T")
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 256], help="batch sizes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--sj-ifnode", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "benchmarks/kernels.py needs a CUDA GPU (none visible to torch here); on a CPU the "
            "kernels only run emulated, for the equality tests (docs/kernels.md). Run it on a "
            'machine with a GPU and `pip install "snn-encodings[spikingjelly,cupy]"`.',
            file=sys.stderr,
        )
        return 2
    if args.sj_ifnode:
        print(json.dumps(_time_sj_ifnode(args)))
        return 0
    from snn_encodings.adapters.spikingjelly import kernels

    kernels.require_cupy()
    device_name = torch.cuda.get_device_name()
    rows = _rows(args, device_name)
    print(f"wrote {_write(rows, args.out, device_name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
