"""Encoding-error study of radix coding (Wang et al., radix encoding, Figures 3 and 8).

Run ``python benchmarks/radix_encoding_error.py [--quick]``. Writes under benchmarks/results/:

- ``radix_encoding_error_heatmap.png`` and ``radix_encoding_error_grid.csv``: Monte Carlo mean
  encoding error of the (leak, normalised threshold) encoder family over uniform samples in
  (0, 1) at a fixed number of steps (Figure 3a). The error is the relative error
  ``(x_hat - x) / x`` (the paper's Eq. 5 is lost; this reading fits its stated range, -1 to
  +inf); the mean absolute error is reported too.
- ``radix_steps_vs_leak.png``: steps the encoder needs per leak factor to reach the mean absolute
  error of 8 binary digits, best threshold per leak (Figure 3b).
- ``radix_vs_rate_rmse.png`` / ``.csv``: RMSE of radix (T digits) against deterministic rate
  coding (N steps) (Figure 8: 16 radix steps ~ 65 536 rate steps).
- ``radix_paper_vs_exact.csv``: agreement of the paper-mode neuron with the exact neuron on
  random signed linear layers, per window T, fractional weight digits D and saturation.
- ``radix_encoding_error.json``: every table above.

The encoder family is :func:`snn_encodings.coding.radix.radix_expansion` (a reconstruction:
threshold leaking by ``leak`` per step, greedy subtraction), vectorised here over samples and
thresholds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from snn_encodings.conversion.rules.radix import RadixLayer, RadixRule
from snn_encodings.specs import Radix

RESULTS = Path(__file__).resolve().parent / "results"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(temp: str) -> None:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    _atomic_write(path, write)


def _save_figure(figure, path: Path) -> None:
    _atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)


def _samples(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, generator=generator, dtype=torch.float64)
    return x.clamp(min=1e-12)  # uniform on (0, 1): the relative error needs x > 0


def _expand(x: torch.Tensor, leak: float, thresholds: torch.Tensor, steps: int) -> torch.Tensor:
    """Decoded values (len(thresholds), len(x)) of the greedy leaky-threshold encoder."""
    v = x.unsqueeze(0).expand(len(thresholds), -1).clone()
    weight = thresholds.unsqueeze(1).clone()
    for _ in range(steps):
        v = torch.where(v >= weight, v - weight, v)
        weight = weight * leak
    return x.unsqueeze(0) - v


def heatmap(x: torch.Tensor, grid: np.ndarray, steps: int) -> list[dict]:
    thresholds = torch.tensor(grid, dtype=torch.float64)
    rows = []
    for leak in grid:
        decoded = _expand(x, float(leak), thresholds, steps)
        relative = ((decoded - x) / x).mean(1)
        absolute = (x - decoded).abs().mean(1)
        for threshold, rel, ab in zip(grid, relative.tolist(), absolute.tolist()):
            rows.append(
                {
                    "leak": round(float(leak), 4),
                    "threshold": round(float(threshold), 4),
                    "steps": steps,
                    "mean_relative_error": rel,
                    "mean_abs_error": ab,
                }
            )
    return rows


def steps_needed(x: torch.Tensor, leaks: list[float], target: float, max_steps: int) -> list[dict]:
    thresholds = torch.tensor(
        sorted(
            set(np.round(np.arange(0.05, 1.0001, 0.05), 4).tolist())
            | {2.0**-k for k in range(1, 11)}
        ),
        dtype=torch.float64,
    )
    rows = []
    for leak in leaks:
        v = x.unsqueeze(0).expand(len(thresholds), -1).clone()
        weight = thresholds.unsqueeze(1).clone()
        found = None
        for step in range(1, max_steps + 1):
            v = torch.where(v >= weight, v - weight, v)
            weight = weight * leak
            error = v.mean(1)
            if bool((error <= target).any()):
                best = int(torch.argmin(error))
                found = {
                    "leak": leak,
                    "steps": step,
                    "threshold": float(thresholds[best]),
                    "mean_abs_error": float(error[best]),
                }
                break
        if found is None:
            found = {"leak": leak, "steps": None, "threshold": None, "mean_abs_error": None}
        rows.append(found)
    return rows


def radix_vs_rate(x: torch.Tensor, max_digits: int) -> list[dict]:
    rows = []
    for steps in range(1, max_digits + 1):
        levels = 2.0**steps
        radix = torch.sqrt(((x - torch.floor(x * levels) / levels) ** 2).mean()).item()
        rate_same = torch.sqrt(((x - torch.floor(x * steps) / steps) ** 2).mean()).item()
        rows.append(
            {
                "steps": steps,
                "radix_rmse": radix,
                "rate_rmse_same_steps": rate_same,
                "rate_steps_same_rmse": int(levels),
                "rate_rmse_at_2_pow_steps": radix,  # floor(N x)/N with N = 2^T is the same grid
                "analytic_floor_rmse": 1 / (levels * math.sqrt(3)),
            }
        )
    return rows


def paper_vs_exact(samples: int, fan_in: int, fan_out: int) -> list[dict]:
    rows = []
    for steps in (3, 4, 6, 8):
        spec = Radix(steps=steps, mode="paper")
        rule = RadixRule(spec)
        for delay in (steps - 2, steps - 1, steps):
            for saturate in (True, False):
                generator = torch.Generator().manual_seed(steps)
                x = torch.rand((samples, fan_in), generator=generator, dtype=torch.float64)
                weight = torch.randn((fan_out, fan_in), generator=generator, dtype=torch.float64)
                weight = torch.round(weight * 2 / fan_in**0.5 * 2**delay) / 2**delay
                bias = torch.randn(fan_out, generator=generator, dtype=torch.float64) * 0.2
                bias = torch.round(bias * 2 ** (steps + delay)) / 2 ** (steps + delay)
                currents = torch.einsum("tbi,oi->tbo", rule.encode_input(x), weight)
                currents = currents + rule.bias_currents(bias, spec.steps_per_layer)[:, None]
                layer = RadixLayer(spec, output=False, delay=delay, saturate=saturate)
                got = rule.decode_output(layer(currents), layer)
                want = rule.twin(nn.functional.linear(rule.decode_input(x), weight, bias))
                rows.append(
                    {
                        "steps": steps,
                        "weight_digits": delay,
                        "saturate": saturate,
                        "agreement": (got == want).double().mean().item(),
                        "rmse": torch.sqrt(((got - want) ** 2).mean()).item(),
                        "max_abs_error": (got - want).abs().max().item(),
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, coarser grid")
    parser.add_argument("--steps", type=int, default=8, help="encoder steps for the heat map")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    samples = 20_000 if args.quick else 1_000_000
    grid = np.round(np.arange(0.1, 1.0001, 0.1 if args.quick else 0.05), 4)
    x = _samples(samples, seed=0)

    grid_rows = heatmap(x, grid, args.steps)
    target = 2.0**-9  # mean |error| of 8 binary digits (floor): half a least-significant digit
    leaks = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0]
    step_rows = steps_needed(
        x[: samples // 10], leaks, target, max_steps=256 if args.quick else 1024
    )
    rmse_rows = radix_vs_rate(x, 16)
    paper_rows = paper_vs_exact(64 if args.quick else 256, 100, 64)

    _write_csv(RESULTS / "radix_encoding_error_grid.csv", grid_rows)
    _write_csv(RESULTS / "radix_vs_rate_rmse.csv", rmse_rows)
    _write_csv(RESULTS / "radix_paper_vs_exact.csv", paper_rows)
    _atomic_write(
        RESULTS / "radix_encoding_error.json",
        lambda temp: Path(temp).write_text(
            json.dumps(
                {
                    "samples": samples,
                    "heatmap_steps": args.steps,
                    "steps_target_mean_abs_error": target,
                    "heatmap": grid_rows,
                    "steps_vs_leak": step_rows,
                    "radix_vs_rate": rmse_rows,
                    "paper_vs_exact": paper_rows,
                },
                indent=1,
            )
        ),
    )

    size = len(grid)
    relative = np.array([r["mean_relative_error"] for r in grid_rows]).reshape(size, size)
    figure, axis = plt.subplots(figsize=(6.5, 5))
    bound = 0.5
    image = axis.imshow(
        relative.T,
        origin="lower",
        cmap="bwr",
        vmin=-bound,
        vmax=bound,
        extent=(grid[0] - 0.025, grid[-1] + 0.025, grid[0] - 0.025, grid[-1] + 0.025),
    )
    axis.plot([0.5], [0.5], "k*", markersize=10)
    axis.annotate("binary setting", (0.5, 0.5), xytext=(0.55, 0.6))
    axis.set_xlabel("leak factor α")
    axis.set_ylabel("normalised threshold θ_n")
    axis.set_title(f"mean relative encoding error, {args.steps} steps, {samples:,} samples")
    figure.colorbar(image, ax=axis, label="(x̂ − x) / x (clipped to ±0.5)")
    _save_figure(figure, RESULTS / "radix_encoding_error_heatmap.png")

    figure, axis = plt.subplots(figsize=(6, 4))
    found = [r for r in step_rows if r["steps"] is not None]
    axis.semilogy([r["leak"] for r in found], [r["steps"] for r in found], "o-")
    axis.set_xlabel("leak factor α")
    axis.set_ylabel("steps to mean |error| ≤ 2^-9")
    axis.set_title("steps needed vs leak (best threshold per leak)")
    _save_figure(figure, RESULTS / "radix_steps_vs_leak.png")

    figure, axis = plt.subplots(figsize=(6, 4))
    steps = [r["steps"] for r in rmse_rows]
    axis.loglog(steps, [r["radix_rmse"] for r in rmse_rows], "o-", label="radix (base 2)")
    rate_steps = np.unique(np.append(np.logspace(0, 16.5, 60, base=2).astype(int), 65536))
    rate = [math.sqrt(float(((x - torch.floor(x * n) / n) ** 2).mean())) for n in rate_steps]
    axis.loglog(rate_steps, rate, "-", label="deterministic rate")
    axis.axhline(rmse_rows[-1]["radix_rmse"], color="grey", linestyle=":", label="radix, 16 steps")
    axis.set_xlabel("time steps")
    axis.set_ylabel("RMSE")
    axis.legend()
    _save_figure(figure, RESULTS / "radix_vs_rate_rmse.png")

    binary = next(r for r in grid_rows if r["leak"] == 0.5 and r["threshold"] == 0.5)
    white = [
        (r["leak"], r["threshold"])
        for r in grid_rows
        if abs(r["mean_relative_error"]) <= 1.5 * abs(binary["mean_relative_error"])
    ]
    print(
        f"heat map: binary setting mean relative error {binary['mean_relative_error']:.4g}; "
        f"cells within 1.5x of it (leak, threshold): {white}"
    )
    print("steps vs leak:", [(r["leak"], r["steps"]) for r in step_rows])
    rate_65536 = rate[int(np.flatnonzero(rate_steps == 65536)[0])]
    print(
        f"radix 16 steps RMSE {rmse_rows[-1]['radix_rmse']:.3g}; rate 65536 steps {rate_65536:.3g}"
    )
    worst = min(
        r["agreement"] for r in paper_rows if r["saturate"] and r["weight_digits"] >= r["steps"]
    )
    print(f"paper vs exact, D >= T with saturation: worst agreement {worst:.4f}")
    print(f"done in {time.perf_counter() - start:.1f} s; results in {RESULTS}")


if __name__ == "__main__":
    main()
