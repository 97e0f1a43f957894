"""Radix coding: a value as base-r digits, one spike per digit, exact conversion.

**The idea** (Wang, Gu, Goh, Zhou and Luo, "Efficient Spiking Neural Networks with Radix
Encoding", IEEE TNNLS 2024, arXiv 2105.06943). Rate coding gives every spike the same weight, so
T steps resolve only T + 1 levels. Radix coding weighs the spike at step k by r^-k: a value
x in [0, 1) is sent as its first T base-r digits,

    x ≈ sum_k d_k r^-k,   d_k in {0, ..., r - 1},

so T steps resolve r^T levels (8 binary steps: 256 levels, where rate coding needs 255 steps).
Spikes stay binary: for r > 2 a digit d is sent as d spikes in the r - 1 sub-steps of its slot.
The paper's worked example (Section IV-B): 0.78125 with leak and threshold 1/2 is '11001000';
:func:`snn_encodings.coding.encode_radix` gives the same train, and 4 digits give '1100' = 0.75.

**The exact neuron** (``Radix(mode="exact")``, the library's default) works one window behind
its input. During an input window it integrates the weighted input digits with Horner's rule,
acc <- r acc + I at each new digit, so at the window's end acc = r^T z, the pre-activation z in
units of one least significant digit. That value becomes the membrane, and during the next window
the neuron emits it greedily, most significant digit first: at digit j it fires if the membrane is
at least r^(T-1-j) and then subtracts that. The output digits are exactly those of
floor_T(clip(z, 0, 1 - r^-T)): a negative membrane never fires (the ReLU), one above r^T fires
at every step (saturation). The ANN twin of a converted network uses exactly this quantised
clipped ReLU, and with weights rounded to a dyadic grid every float64 sum is exact, so the
converted SNN reproduces its twin bit for bit. (The paper's own neuron, least significant digit
first, is ``mode="paper"``; see :func:`snn_encodings.functional.radix_step`.)

This script prints the worked example, draws a timing diagram of one exact neuron over two input
windows, and converts an MNIST network, comparing its outputs with its ANN twin's.

Run:
    python tutorials/radix_coding.py --plot radix.png
    python tutorials/radix_coding.py --quick        # seconds; used by the tests
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import snn_encodings
from snn_encodings import Radix
from snn_encodings.coding import decode_radix, encode_radix
from snn_encodings.data import mnist_split
from snn_encodings.functional import radix_twin, simulate
from snn_encodings.models import train_mnist

#: Timing diagram: two inputs, their weights, and their values in two successive windows.
WEIGHTS = (0.75, 0.5)
WINDOWS = ((0.8125, 0.375), (0.25, 0.5))


def bits(spikes: torch.Tensor) -> str:
    return "".join(str(int(s)) for s in spikes.flatten())


def worked_example() -> dict[str, object]:
    """The paper's example: 0.78125 as 8 and as 4 binary digits."""
    x = torch.tensor([0.78125])
    result = {}
    for steps in (8, 4):
        spec = Radix(steps=steps)
        spikes = encode_radix(x, spec)
        result[steps] = (bits(spikes), float(decode_radix(spikes, spec)))
        print(
            f"encode_radix(0.78125, Radix(steps={steps})) = '{result[steps][0]}' -> {result[steps][1]}"
        )
    return result


def neuron_timing(steps: int) -> dict[str, torch.Tensor]:
    """Simulate one exact radix neuron fed two windows of input digits, then a silent window."""
    spec = Radix(steps=steps)
    window = spec.steps_per_layer
    values = torch.tensor(WINDOWS, dtype=torch.float64)  # (windows, inputs)
    inputs = torch.cat(
        [encode_radix(v.unsqueeze(0), spec) for v in values]
        + [torch.zeros(window, 1, values.shape[1], dtype=torch.float64)]
    )  # (3 windows of steps, 1, inputs)
    weights = torch.tensor(WEIGHTS, dtype=torch.float64)
    currents = (inputs * weights).sum(-1, keepdim=True)  # the synapse: I_n = sum_j w_j s_j(n)
    run = simulate(spec, currents, record=True)
    z = values @ weights
    twin = radix_twin(z, spec)
    decoded = torch.stack(
        [
            decode_radix(run.spikes[(w + 1) * window : (w + 2) * window, 0], spec)[0]
            for w in range(len(WINDOWS))
        ]
    )
    for w, (x, value) in enumerate(zip(WINDOWS, z)):
        out = run.spikes[(w + 1) * window : (w + 2) * window]
        print(
            f"window {w + 1}: inputs {x} on weights {WEIGHTS}: z = {value:.6f}; output in window "
            f"{w + 2}: '{bits(out)}' = {decoded[w]:.6f}, twin floor_T(clip(z)) = {twin[w]:.6f}"
        )
    return {
        "inputs": inputs[:, 0],
        "acc": run.states.acc[:, 0, 0],
        "v": run.states.v[:, 0, 0],
        "spikes": run.spikes[:, 0, 0],
        "z": z,
        "decoded": decoded,
        "twin": twin,
    }


def convert_and_compare(quick: bool, steps: int) -> dict[str, float]:
    """Convert an MNIST network with radix coding and compare the SNN with its ANN twin."""
    ann = train_mnist("mlp" if quick else "convnet", epochs=1 if quick else 4, progress=False)
    calibration = DataLoader(mnist_split("train", limit=256 if quick else 2000), batch_size=256)
    evaluation = DataLoader(mnist_split("eval", limit=64 if quick else None), batch_size=500)
    network = snn_encodings.convert(ann, Radix(steps=steps), calibration)
    snn = snn_encodings.evaluate(network, evaluation, progress=False)
    twin = snn_encodings.evaluate(network, evaluation, twin=True, progress=False)
    original = snn_encodings.evaluate(ann, evaluation, progress=False)
    difference = 0.0
    identical = 0
    with torch.no_grad():
        for x, _ in evaluation:
            out, reference = network(x), network.twin(x)
            difference = max(difference, float((out - reference).abs().max()))
            identical += int((out == reference).all(1).sum())
    samples = len(evaluation.dataset)
    print(f"Radix(steps={steps}) on {samples} MNIST evaluation images:")
    print(f"  ANN {original.accuracy:.4f}, ANN twin {twin.accuracy:.4f}, SNN {snn.accuracy:.4f}")
    print(
        f"  SNN outputs == twin outputs on {identical}/{samples} images, max |SNN - twin| = {difference}"
    )
    print(
        f"  latency {snn.latency} steps ({network.spiking_depth} layers of {network.spec.steps_per_layer} "
        f"steps, plus the output window), {snn.spikes_per_sample:.0f} spikes per image"
    )
    return {
        "ann_accuracy": original.accuracy,
        "twin_accuracy": twin.accuracy,
        "snn_accuracy": snn.accuracy,
        "max_difference": difference,
        "identical": identical,
        "samples": samples,
        "latency": snn.latency,
    }


def plot(timing: dict[str, torch.Tensor], steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = Radix(steps=steps)
    window = spec.steps_per_layer
    total = timing["spikes"].shape[0]
    time = torch.arange(total)
    figure, axes = plt.subplots(
        4, 1, figsize=(10, 7.5), sharex=True, height_ratios=[1.2, 1.6, 1.6, 0.8]
    )
    inputs, integrator, membrane, output = axes
    for j, weight in enumerate(WEIGHTS):
        times = torch.nonzero(timing["inputs"][:, j]).flatten()
        inputs.vlines(times, j + 0.6, j + 1.4, color=f"C{j}", linewidth=2)
        for w, values in enumerate(WINDOWS):
            inputs.text(
                w * window + 0.1 * window, j + 1.45, f"x = {values[j]}", fontsize=8, color=f"C{j}"
            )
    inputs.set_yticks([1, 2], [f"input {j + 1} (w = {w})" for j, w in enumerate(WEIGHTS)])
    inputs.set_ylim(0.4, 3.3)
    inputs.set_title(
        f"one exact radix neuron, Radix(steps={steps}): input digits MSB first", fontsize=10
    )

    # acc is moved into v (and cleared) at a window's last step: show the value it handed over
    window_end = time % window == window - 1
    acc = torch.where(window_end, timing["v"], timing["acc"])
    integrator.plot(time, acc, "o-", drawstyle="steps-mid", color="C2")
    for w, value in enumerate(timing["z"]):
        integrator.annotate(
            f"r^T z = {float(value) * spec.levels:g}",
            ((w + 1) * window - 1, float(value) * spec.levels),
            textcoords="offset points",
            xytext=(-100, -4),
            fontsize=8,
        )
    integrator.set_ylim(-1, float(acc.max()) * 1.2)
    integrator.set_ylabel("acc (LSB units)")
    integrator.set_title(
        "integration with Horner's rule: acc <- r acc + I at each digit", fontsize=10
    )

    # the membrane entering each step is what the step compares with the digit's threshold
    entering = torch.cat([torch.zeros(1, dtype=timing["v"].dtype), timing["v"][:-1]])
    thresholds = torch.tensor([float(spec.base ** (steps - 1 - j)) for j in range(steps)]).repeat(
        total // window
    )
    membrane.plot(time, entering, "o-", drawstyle="steps-mid", color="C3", label="membrane v")
    membrane.plot(
        time,
        thresholds,
        "k--",
        drawstyle="steps-mid",
        linewidth=0.8,
        label="digit threshold r^(T-1-j)",
    )
    membrane.set_ylabel("v (LSB units)")
    membrane.legend(frameon=False, fontsize=8, loc="upper right")
    membrane.set_title(
        "emission, one window later: fire if v >= r^(T-1-j), then subtract it", fontsize=10
    )

    fired = torch.nonzero(timing["spikes"]).flatten()
    output.vlines(fired, 0.6, 1.4, color="C3", linewidth=2)
    for w, value in enumerate(timing["decoded"]):
        digits = bits(timing["spikes"][(w + 1) * window : (w + 2) * window])
        label = f"'{digits}' = {float(value):g} = floor_T(clip(z))"
        output.text((w + 1) * window + 0.1 * window, 1.5, label, fontsize=8)
    output.set_yticks([1], ["output"])
    output.set_ylim(0.4, 2.0)
    output.set_xlabel("time step")
    for axis in axes:
        for w in range(1, total // window):
            axis.axvline(w * window - 0.5, color="grey", linewidth=0.6)
    for w in range(total // window):
        inputs.text(w * window + window / 2 - 0.5, 2.95, f"window {w + 1}", ha="center", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, runs in seconds")
    parser.add_argument("--plot", type=Path, default=None, help="write the figure to this path")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    example = worked_example()
    timing = neuron_timing(steps=4)
    comparison = convert_and_compare(args.quick, steps=4 if args.quick else 6)
    if args.plot is not None:
        plot(timing, 4, args.plot)
    return {"example": example, "timing": timing, "comparison": comparison}


if __name__ == "__main__":
    main()
