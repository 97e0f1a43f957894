"""Quartz: time-to-first-spike coding, one spike per neuron, the value is the time.

**The idea** (Lenz, Orchard and Sheik, "Ultra-low-power Image Classification on Neuromorphic
Hardware", arXiv 2309.16795). Every neuron fires exactly once per layer, and the time of that
spike is its value: on a grid of 1/K (K = ``t_max`` steps per phase) a value x = n/K is sent as a
spike at step 2K - n of the layer's window, so x = 1 fires at K and x = 0 at 2K (Eq. 1, shifted
here by K to leave room for values above 1). A layer's window has four phases of K steps:

- *encode phase* [K, 2K]: input spikes arrive; each adds its weight to the neuron's synaptic
  current i, and the non-leaky membrane integrates i every step. An input that arrives n steps
  before 2K has been integrated n times at 2K, so the membrane then holds sum_j w_j n_j = K z.
- *readout* at 2K: a readout synapse sets the current to exactly 1 (in hardware, one counter
  spike of weight 1 - sum_j w_j), so every neuron now ramps with slope 1 from K z + 1.
- *decode phase* [2K, 3K]: the neuron crosses its threshold K + 1/2 about K(1 - z) steps later
  and fires at 3K - round(K z), which is the encoding of z again, one phase later (the layer's
  latency is K steps, and its decode phase is the next layer's encode phase).
- *rectifier* at 3K: a neuron that has not fired (z <= 0) is forced to fire now, which encodes 0:
  the ReLU (Eq. 5).

Because the membrane only sums, the converted network reproduces its ANN twin (the ReLU rounded
to the 1/K grid), except for one failure mode the paper discusses (Sec. 6.2): a neuron whose
large positive inputs arrive before its negative ones can cross the threshold during the encode
phase, an *early spike*, whose value then differs from the twin's. A lower activation percentile
at normalisation trades quantisation error for more early spikes (98.5 on MNIST).

``Quartz(mode="paper")`` is the paper's neuron, early spikes included. The default
``mode="exact"`` holds a spike until the readout (no spike during the encode phase): a neuron
whose membrane crossed early fires at 2K, the clipped value 1 the twin computes, so the network
equals its twin on every input.

The paper counts the cost of one image as Omega = sigma + 2 nu T_max (Eq. 9): sigma synaptic
operations (each spike times its fan-out), nu spiking neurons, each updated during 2 T_max steps.

This script draws Quartz neurons' timing diagrams for the paper's Figure 1 example plus an early
spike (in both modes), and converts an MNIST network at ``t_max = 16`` in both modes, reporting
accuracy, agreement with the twin, the fraction of early spikes and Omega per image.

Run:
    python tutorials/quartz_ttfs.py --plot quartz.png
    python tutorials/quartz_ttfs.py --quick        # seconds; used by the tests
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import snn_encodings
from snn_encodings import Quartz
from snn_encodings.coding import decode_quartz, encode_quartz
from snn_encodings.conversion import rule_for
from snn_encodings.conversion.quartz_analysis import quartz_operations
from snn_encodings.data import mnist_split
from snn_encodings.functional import simulate
from snn_encodings.models import train_mnist

#: Timing diagram: the two input values of Lenz et al.'s Figure 1; per neuron its weights and
#: the neuron mode.
INPUTS = (0.75, 0.25)
NEURONS = {
    "w = (1, -1): z = 0.5": ((1.0, -1.0), "exact"),
    "w = (-1, 1): z = -0.5, rectified": ((-1.0, 1.0), "exact"),
    "w = (2.5, -4): z = 0.875, paper mode: early spike": ((2.5, -4.0), "paper"),
    "w = (2.5, -4): z = 0.875, exact mode: held": ((2.5, -4.0), "exact"),
}


def neuron_timing(t_max: int) -> dict[str, torch.Tensor]:
    """Simulate four Quartz neurons on the same two input spikes over one window."""
    spec = Quartz(t_max=t_max)
    x = torch.tensor([INPUTS], dtype=torch.float64)
    inputs = encode_quartz(x, spec)[:, 0]  # (4K, 2): one spike per input, at 2K - n
    weights = torch.tensor([w for w, _ in NEURONS.values()], dtype=torch.float64)
    currents = (inputs @ weights.T).unsqueeze(1)  # the synapse: (4K, 1, neurons)
    runs = {
        mode: simulate(Quartz(t_max=t_max, mode=mode), currents, record=True)
        for mode in ("exact", "paper")
    }
    # each neuron's trace comes from the run of its own mode
    pick = torch.tensor([mode == "paper" for _, mode in NEURONS.values()])
    spikes = torch.where(pick, runs["paper"].spikes, runs["exact"].spikes)
    v = torch.where(pick, runs["paper"].states.v, runs["exact"].states.v)
    i = torch.where(pick, runs["paper"].states.i, runs["exact"].states.i)
    z = x @ weights.T
    # the layer's output sits K steps earlier (the next layer's input times)
    values = decode_quartz(spikes[spec.layer_latency :], spec)[0]
    twin = rule_for(spec).twin(z)[0]
    times = spikes[:, 0].argmax(0)
    print(f"Quartz(t_max={t_max}): inputs {INPUTS} spike at steps {inputs.argmax(0).tolist()}")
    for j, label in enumerate(NEURONS):
        phase = "encode phase: early" if times[j] < spec.read_step else "decode phase"
        if times[j] == spec.rectify_step:
            phase = "rectifier"
        print(
            f"  {label:<52} spike at step {int(times[j]):>2} ({phase}) -> {values[j]:.4f}, "
            f"ANN twin {twin[j]:.4f}"
        )
    return {
        "inputs": inputs,
        "v": v[:, 0],
        "i": i[:, 0],
        "spikes": spikes[:, 0],
        "times": times,
        "values": values,
        "twin": twin,
    }


def measure(network: snn_encodings.SpikingNetwork, evaluation: DataLoader) -> dict[str, object]:
    """Accuracy, agreement with the twin, early spikes and operations of a converted network."""
    spec = network.spec
    layers = [stage.neurons for stage in network.stages if stage.kind != "pool"]
    for layer in layers:
        layer.reset_counters()
    snn = snn_encodings.evaluate(network, evaluation, progress=False)
    early = sum(layer.early_spikes for layer in layers) / sum(layer.neurons for layer in layers)
    neurons = [
        int(torch.tensor(stage.shape).prod()) for stage in network.stages if stage.kind != "pool"
    ]
    ops = quartz_operations(snn.synaptic_events_per_sample, neurons, spec)
    twin = snn_encodings.evaluate(network, evaluation, twin=True, progress=False)
    outputs, references, early_images = [], [], []
    with torch.no_grad():
        for x, _ in evaluation:
            outputs.append(network(x))
            references.append(network.twin(x))
            # last_early: which neurons of each layer fired during the encode phase in that call
            masks = [layer.last_early.flatten(1).any(1) for layer in layers]
            early_images.append(torch.stack(masks).any(0))
    out, reference = torch.cat(outputs), torch.cat(references)
    same = (out == reference).all(1)
    clean = ~torch.cat(early_images)
    identical, clean_identical = int(same.sum()), int((same & clean).sum())
    samples = len(evaluation.dataset)
    print(f"{spec.mode} mode:")
    print(f"  ANN twin {twin.accuracy:.4f}, SNN {snn.accuracy:.4f}")
    print(
        f"  SNN outputs == twin outputs on {identical}/{samples} images; on the "
        f"{int(clean.sum())} images without an early spike: {clean_identical}"
    )
    print(f"  early spikes: {100 * early:.3f}% of neurons")
    print(
        f"  per image: {snn.spikes_per_sample:.0f} spikes, sigma = {ops.synops:.0f} synaptic ops, "
        f"nu = {ops.neurons:.0f} neurons, Omega = sigma + 2 nu T_max = {ops.total:.0f}"
    )
    print(f"  latency {snn.latency} steps")
    return {
        "twin_accuracy": twin.accuracy,
        "snn_accuracy": snn.accuracy,
        "early_fraction": early,
        "identical": identical,
        "clean": int(clean.sum()),
        "clean_identical": clean_identical,
        "samples": samples,
        "ops": ops,
        "outputs": out,
        "twin_outputs": reference,
    }


def convert_and_count(quick: bool, t_max: int) -> dict[str, object]:
    """Convert an MNIST network with Quartz in both modes and :func:`measure` each."""
    ann = train_mnist("mlp" if quick else "convnet", epochs=1 if quick else 4, progress=False)
    calibration = DataLoader(mnist_split("train", limit=256 if quick else 2000), batch_size=256)
    evaluation = DataLoader(mnist_split("eval", limit=64 if quick else None), batch_size=500)
    original = snn_encodings.evaluate(ann, evaluation, progress=False)
    print(f"Quartz(t_max={t_max}) on {len(evaluation.dataset)} MNIST evaluation images:")
    print(f"  ANN {original.accuracy:.4f}")
    results: dict[str, object] = {"ann_accuracy": original.accuracy}
    for mode in ("exact", "paper"):
        # analytic=True: fire times from value passes, spike for spike the window's simulation
        network = snn_encodings.convert(
            ann, Quartz(t_max=t_max, mode=mode, analytic=True), calibration
        )
        results[mode] = measure(network, evaluation)
    return results


def plot(
    timing: dict[str, torch.Tensor],
    mnist: dict[str, object],
    t_max: int,
    mnist_t_max: int,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = Quartz(t_max=t_max)
    k = t_max
    steps = spec.steps_per_layer
    time = torch.arange(steps)
    figure = plt.figure(figsize=(12, 7.5))
    grid = figure.add_gridspec(
        len(NEURONS) + 1, 2, width_ratios=[2.3, 1], height_ratios=[0.7] + [1.3] * len(NEURONS)
    )
    axes = [figure.add_subplot(grid[0, 0])]
    axes += [figure.add_subplot(grid[r + 1, 0], sharex=axes[0]) for r in range(len(NEURONS))]
    raster = axes[0]
    for j, value in enumerate(INPUTS):
        t = int(timing["inputs"][:, j].argmax())
        raster.vlines(t, j + 0.6, j + 1.4, color="k", linewidth=2)
        raster.text(
            t - 0.3,
            j + 1,
            f"x{j + 1} = {value}: n = {round(value * k)}, t = 2K - n = {t}",
            ha="right",
            va="center",
            fontsize=8,
        )
    raster.set_yticks([1, 2], ["x1", "x2"])
    raster.set_ylim(0.4, 2.9)
    raster.set_title(
        f"four Quartz neurons on the same two inputs, K = t_max = {k}, threshold θ = K + 1/2",
        fontsize=10,
    )
    for row, label in enumerate(NEURONS):
        axis = axes[row + 1]
        spike = int(timing["times"][row])
        before = time < spike
        axis.plot(
            time[before],
            timing["v"][before, row],
            "o-",
            markersize=3,
            color="C3",
            label="membrane v",
        )
        # the step that fires clears v and i; show the crossing, then the silent rest of the window
        if spike != spec.rectify_step:  # a rectified neuron is forced to fire below threshold
            axis.plot(
                [spike - 1, spike],
                [float(timing["v"][spike - 1, row]), spec.threshold],
                ":",
                color="C3",
            )
        axis.plot(
            time[~before],
            timing["v"][~before, row],
            color="0.6",
            linewidth=1,
            label="cleared after the spike",
        )
        axis.plot(
            time[before], timing["i"][before, row], color="C0", linewidth=1, label="current i"
        )
        axis.axhline(spec.threshold, color="k", linestyle="--", linewidth=0.8)
        axis.vlines(spike, spec.threshold, spec.threshold + 4, color="C3", linewidth=2.5)
        axis.text(
            spike + 0.4,
            spec.threshold + 2,
            f"spike at {spike} -> {float(timing['values'][row]):g}",
            fontsize=8,
        )
        axis.set_ylim(-6, spec.threshold + 5)
        axis.set_ylabel(label.split(":")[0], fontsize=8)
        axis.set_title(label, fontsize=9, loc="left")
        if row == 0:
            axis.legend(frameon=False, fontsize=7, loc="lower left", ncol=3)
    for axis in axes:
        axis.axvspan(k - 0.5, 2 * k - 0.5, color="C2", alpha=0.08)
        axis.axvspan(2 * k - 0.5, 3 * k - 0.5, color="C1", alpha=0.08)
        axis.axvline(spec.read_step, color="C1", linewidth=1)
        axis.axvline(spec.rectify_step, color="C4", linewidth=1)
    raster.text(1.5 * k, 2.5, "encode phase", ha="center", fontsize=8)
    raster.text(2.5 * k, 2.5, "decode phase", ha="center", fontsize=8)
    raster.text(spec.read_step + 0.3, 0.5, "readout: i = 1", fontsize=7, color="C1")
    raster.text(spec.rectify_step + 0.3, 0.5, "rectifier", fontsize=7, color="C4")
    axes[-1].set_xlabel("time step within the layer's window (4K steps)")
    axes[-1].set_xlim(0, steps - 1)

    scatter = figure.add_subplot(grid[1:, 1])
    low, high = 0.0, 0.0
    for mode, marker in (("paper", "x"), ("exact", ".")):
        result = mnist[mode]
        twin_out, out = result["twin_outputs"].flatten(), result["outputs"].flatten()
        scatter.plot(
            twin_out,
            out,
            marker,
            markersize=3,
            alpha=0.5,
            label=f"{mode}: SNN {result['snn_accuracy']:.3f}, twin {result['twin_accuracy']:.3f}, "
            f"early spikes {100 * result['early_fraction']:.2f}%",
        )
        low = min(low, float(torch.minimum(twin_out.min(), out.min())))
        high = max(high, float(torch.maximum(twin_out.max(), out.max())))
    scatter.plot([low, high], [low, high], "k--", linewidth=0.8)
    scatter.set_xlabel("ANN twin output (logit units)")
    scatter.set_ylabel("SNN output")
    scatter.legend(frameon=False, fontsize=7, loc="upper left")
    scatter.set_title(
        f"MNIST, t_max = {mnist_t_max}: ANN {mnist['ann_accuracy']:.3f}, "
        f"Ω = {mnist['exact']['ops'].total:.3g} ops/image",
        fontsize=9,
    )
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

    timing = neuron_timing(t_max=8)
    mnist = convert_and_count(args.quick, t_max=16)
    if args.plot is not None:
        plot(timing, mnist, 8, 16, args.plot)
    return {"timing": timing, "mnist": mnist}


if __name__ == "__main__":
    main()
