"""Norse: swap a LIF layer for an encoding's layer, then convert a trained CNN.

Part 1 builds a small Norse network, ``SequentialState(Lift(Linear), LIF(), Lift(Linear))``,
and swaps its ``LIF()`` for ``ICRateNeurons``: same calling form, same time-first tensors, same
``state=None`` start. With constant input currents the IC-rate layer's spike count is exactly
the quantised ReLU ``clip(floor(T z + v0), 0, T) / T`` that ANN-to-SNN conversion relies on,
while Norse's LIF (synaptic current, leak, reset to zero) only approximates a ReLU.

Part 2 trains a small CNN on the shipped MNIST digits, converts it with every encoding through
``snn_encodings.adapters.norse.convert`` and compares its accuracy with the ANN's.

Run:
    python tutorials/norse_swap_and_convert.py --plot norse.png
    python tutorials/norse_swap_and_convert.py --quick        # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # norse 1.1 uses torch.jit.script
    import norse.torch as norse

from snn_encodings.adapters.norse import ICRateNeurons, convert

from snn_encodings import ICRate, Spec
from snn_encodings.data.mnist import mnist_split
from snn_encodings.models import build, train_mnist

ENCODINGS: list[Spec] = [
    ICRate(steps=16, init="zero", compensate=False),  # plain rate conversion
    ICRate(steps=16, init="ann"),  # IC-SNN: v0 = theta / 2, compensated readout
    ICRate(steps=16, init="data"),  # IC-SNN: v0 measured per channel on calibration data
]


def swap_lif(steps: int) -> dict[str, torch.Tensor]:
    """Drive a Norse LIF layer and an IC-rate layer with the same constant currents."""
    currents = torch.linspace(-0.25, 1.25, 61)
    sequence = currents.expand(steps, 1, -1)  # (T, B=1, N): one neuron per current

    lif = norse.LIF()
    icrate = ICRateNeurons(ICRate(steps=steps, init="ann"))
    # Both are Norse time-first layers: (T, B, N) -> ((T, B, N), state).
    with torch.no_grad():
        lif_spikes, _ = lif(sequence * 4)  # LIF integrates only dt * tau_mem_inv = 0.1 of its input
        icrate_spikes, _ = icrate(sequence)

    # The swap inside a network: the same container, one layer replaced.
    torch.manual_seed(0)
    network = norse.SequentialState(
        norse.Lift(nn.Linear(4, 8)), norse.LIF(), norse.Lift(nn.Linear(8, 2))
    )
    # norse.LIF()  ->  ICRateNeurons(): the spec defaults to ICRate()
    swapped = norse.SequentialState(network[0], ICRateNeurons(), network[2])
    inputs = torch.rand(steps, 3, 4)
    out_lif, _ = network(inputs)
    out_icrate, states = swapped(inputs)
    print(
        f"LIF network output {tuple(out_lif.shape)}, swapped network output {tuple(out_icrate.shape)}"
    )
    print(
        f"IC-rate layer state after {steps} steps: {type(states[1]).__name__}, v {tuple(states[1].v.shape)}"
    )

    return {
        "current": currents,
        "lif_rate": lif_spikes.mean(0)[0],
        "icrate_rate": icrate_spikes.mean(0)[0],
        "relu": currents.clamp(0, 1),
    }


def train_ann(quick: bool) -> nn.Module:
    """The shipped reference CNN (cached after the first run); a tiny MLP in quick mode."""
    if not quick:
        return train_mnist("convnet", epochs=4)
    torch.manual_seed(0)
    model = build("mlp")
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    images, labels = mnist_split("train", limit=1024).tensors
    for x, y in zip(images.split(64), labels.split(64)):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


def convert_and_evaluate(quick: bool) -> dict[str, float]:
    """Convert the trained CNN with every encoding; accuracy of each Norse model on MNIST."""
    ann = train_ann(quick)
    size = 256 if quick else 1024
    calibration = torch.utils.data.DataLoader(mnist_split("train", limit=size), batch_size=128)
    images, labels = mnist_split("eval", limit=64 if quick else None).tensors
    with torch.no_grad():
        accuracy = {"ANN": (ann(images).argmax(1) == labels).float().mean().item()}
    for spec in ENCODINGS:
        spec = dataclasses.replace(spec, steps=8) if quick else spec
        model = convert(ann, spec, calibration)  # a norse.torch.SequentialState
        correct = 0
        with torch.no_grad():
            for x, y in zip(images.split(250), labels.split(250)):
                outputs, _ = model(x)  # state=None: every layer starts from its initial state
                correct += int((outputs.argmax(1) == y).sum())
        label = f"{type(spec).__name__} {spec.init}, T={spec.steps}"
        accuracy[label] = correct / len(labels)
    for label, value in accuracy.items():
        print(f"{label:>28}: {value:.3f} on {len(labels)} MNIST evaluation images")
    return accuracy


def plot(
    curves: dict[str, torch.Tensor], accuracy: dict[str, float], path: Path, steps: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axis, bars) = plt.subplots(1, 2, figsize=(10, 3.5))
    x = curves["current"].numpy()
    axis.plot(x, curves["relu"].numpy(), "k--", label="ReLU clip(z, 0, 1)")
    axis.step(x, curves["icrate_rate"].numpy(), where="mid", label=f"ICRateNeurons, T={steps}")
    axis.plot(x, curves["lif_rate"].numpy(), label="norse LIF (input x4)")
    axis.set_xlabel("constant input current z (threshold units)")
    axis.set_ylabel("spikes per step")
    axis.legend(frameon=False)
    container = bars.barh(list(accuracy), list(accuracy.values()))
    bars.bar_label(container, fmt="%.3f", padding=2)
    bars.set_xlim(max(0.0, min(accuracy.values()) - 0.1), 1.0)
    bars.set_xlabel("MNIST accuracy (Norse model after conversion)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, runs in seconds")
    parser.add_argument("--plot", type=Path, default=None, help="write the figure to this path")
    args = parser.parse_args(argv)

    steps = 8 if args.quick else 16
    curves = swap_lif(steps)
    error = (curves["icrate_rate"] - curves["relu"]).abs().max().item()
    print(f"IC-rate rate vs ReLU: max error {error:.3f} (bound 1/(2T) = {1 / (2 * steps):.3f})")
    accuracy = convert_and_evaluate(args.quick)
    if args.plot is not None:
        plot(curves, accuracy, args.plot, steps)
    return {"curves": curves, "max_error": error, "steps": steps, "accuracy": accuracy}


if __name__ == "__main__":
    main()
