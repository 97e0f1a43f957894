"""Time our CuPy multi-step kernels against our torch path and SpikingJelly's own IFNode.

Needs a CUDA GPU with CuPy (``pip install "snn-encodings[spikingjelly,cupy]"``); on a machine
without one it exits with a message saying so. For each case of ``CASES`` (IC-rate, radix in
exact and paper mode, Quartz in exact mode), each dtype, sequence length T in {8, 32, 128} and
batch in {32, 128, 256} (features 1024 per sample) it checks that the kernel's spikes equal the
core's, then measures the forward time of one multi-step call (median of CUDA-event timings
after warm-up) for:

- ``cupy``: our node with ``backend="cupy"`` (one kernel launch);
- ``torch``: our node with ``backend="torch"`` (the core ``simulate`` loop);
- ``sj_ifnode``: SpikingJelly's ``neuron.IFNode(v_reset=None)`` in ``'m'`` mode on the same
  input (timed once per dtype, T and batch), using whatever SpikingJelly 2.x selects on the
  machine (Triton, native CUDA or torch; 2.x has no backend switch on the node).

The spec of a case depends on T: ``ICRate(steps=T)``, ``Quartz(t_max=T/4)`` (one window) and
``Radix(steps=8)`` (T/8 windows of 8 digits; radix windows cannot grow to 128 digits). It
writes ``benchmarks/results/kernels_<device>.csv`` (device name in the file name and in every
row; ``spec`` names the exact spec). Usage:
``python benchmarks/kernels.py [--repeats 50] [--cases ICRate Radix ...] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from snn_encodings.specs import ICRate, Quartz, Radix
from snn_encodings.specs.base import Spec

STEPS = (8, 32, 128)
BATCHES = (32, 128, 256)
FEATURES = 1024
DTYPES = {"float32": torch.float32, "float16": torch.float16}
RADIX_DIGITS = 8

CASES: dict[str, Callable[[int], Spec]] = {
    "ICRate": lambda steps: ICRate(steps=steps),
    "Radix": lambda steps: Radix(steps=RADIX_DIGITS),
    "Radix-paper": lambda steps: Radix(steps=RADIX_DIGITS, mode="paper"),
    "Quartz": lambda steps: Quartz(t_max=steps // 4),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per measurement")
    parser.add_argument(
        "--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to time"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "benchmarks/kernels.py needs a CUDA GPU (none visible to torch here); the CuPy kernels "
            "cannot run on a CPU. Run it on a machine with a GPU and "
            '`pip install "snn-encodings[spikingjelly,cupy]"`.',
            file=sys.stderr,
        )
        return 2
    from snn_encodings.adapters.spikingjelly import NEURONS, kernels
    from spikingjelly.activation_based import neuron

    from snn_encodings.testing import run_core

    kernels.require_cupy()
    device_name = torch.cuda.get_device_name()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_").lower()
    rows = []
    sj_ms: dict[tuple[str, int, int], float] = {}
    for case in args.cases:
        for dtype_name, dtype in DTYPES.items():
            for steps in STEPS:
                spec = CASES[case](steps)
                node_type = NEURONS[type(spec)]
                for batch in BATCHES:
                    generator = torch.Generator(device="cuda").manual_seed(0)
                    currents = torch.rand(
                        (steps, batch, FEATURES), generator=generator, device="cuda"
                    ).to(dtype)
                    ours = {
                        backend: node_type(spec, step_mode="m", backend=backend).cuda()
                        for backend in ("cupy", "torch")
                    }
                    check = _runner(ours["cupy"])(currents)
                    if not torch.equal(check, run_core(spec, currents).spikes):
                        raise SystemExit(f"kernel != torch reference for {spec!r} {dtype_name}")
                    key = (dtype_name, steps, batch)
                    if key not in sj_ms:
                        sj = neuron.IFNode(v_reset=None, step_mode="m").cuda()
                        sj_ms[key] = _time(_runner(sj), currents, args.repeats)
                    timings = {
                        "cupy": _time(_runner(ours["cupy"]), currents, args.repeats),
                        "torch": _time(_runner(ours["torch"]), currents, args.repeats),
                        "sj_ifnode": sj_ms[key],
                    }
                    for path, ms in timings.items():
                        rows.append(
                            {
                                "device": device_name,
                                "encoding": case,
                                "spec": repr(spec),
                                "dtype": dtype_name,
                                "steps": steps,
                                "batch": batch,
                                "features": FEATURES,
                                "path": path,
                                "median_ms": f"{ms:.4f}",
                                "speedup_vs_torch": f"{timings['torch'] / ms:.2f}",
                            }
                        )
                    print(
                        f"{case} {dtype_name} T={steps} B={batch}: "
                        + ", ".join(f"{k} {v:.3f} ms" for k, v in timings.items())
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"kernels_{slug}.csv"
    with tempfile.NamedTemporaryFile(
        "w", dir=args.out, suffix=".tmp", delete=False, newline=""
    ) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(handle.name, target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
