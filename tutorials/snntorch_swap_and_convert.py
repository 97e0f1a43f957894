"""snnTorch tutorial: swap the neuron of an snnTorch network, then convert a trained CNN.

Part 1 takes the two-layer network of snnTorch's tutorial 5 (``nn.Linear`` + ``snn.Leaky``,
a Python loop over time, ``spk_rec``/``mem_rec`` recorded time-first), swaps ``snn.Leaky`` for
:class:`~snn_encodings.adapters.snntorch.ICRateNeuron` and trains it with snnTorch's surrogate
gradients, exactly as one trains a Leaky network. Part 2 converts a trained CNN into an
snnTorch-style spiking model. Both parts plot a spike raster and membrane traces.

Run::

    python tutorials/snntorch_swap_and_convert.py --plot swap_and_convert.png
    python tutorials/snntorch_swap_and_convert.py --quick --plot quick.png   # seconds, for tests
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import snntorch as snn
import snntorch.spikegen
import snntorch.surrogate
import torch
from snn_encodings.adapters.snntorch import (
    ICRateNeuron,
    convert,
    rate_sigma_delta,
)
from torch import nn

from snn_encodings import ICRate
from snn_encodings.data import mnist_split


# --- Part 1: a standard snnTorch network, with a swappable neuron -------------------------------
class Net(nn.Module):
    """snnTorch tutorial 5's network; ``make_neuron`` builds each spiking layer."""

    def __init__(self, make_neuron: Callable[[], nn.Module], hidden: int = 100) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.lif1 = make_neuron()
        self.fc2 = nn.Linear(hidden, 10)
        self.lif2 = make_neuron()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: time-first input spikes ``(num_steps, B, 784)``."""
        mem1 = self.lif1.reset_mem()  # our neurons: the encoding's initial state, not zeros
        mem2 = self.lif2.reset_mem()
        spk2_rec, mem2_rec, mem1_rec = [], [], []
        for step in range(x.shape[0]):
            cur1 = self.fc1(x[step])
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
            mem1_rec.append(mem1)
        return torch.stack(spk2_rec), torch.stack(mem2_rec), torch.stack(mem1_rec)


def train(net: Net, encode: Callable[[torch.Tensor], torch.Tensor], iterations: int) -> list[float]:
    """snnTorch's usual loop: cross-entropy on the output spike counts, BPTT, Adam."""
    data = mnist_split("train", limit=64 * iterations)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=False)
    optimiser = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for images, labels in loader:
        spk_rec, _, _ = net(encode(images.flatten(1)))
        loss = nn.functional.cross_entropy(spk_rec.sum(0), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
) -> float:
    return (predict(images) == labels).float().mean().item()


# --- Part 2: convert a trained CNN ---------------------------------------------------------------
def train_cnn(iterations: int) -> nn.Module:
    """A small CNN trained briefly on the shipped MNIST split (stand-in for your own model)."""
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(),  # 28 -> 12
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),  # 12 -> 5
        nn.Flatten(), nn.Linear(16 * 5 * 5, 10),
    )  # fmt: skip
    data = mnist_split("train", limit=64 * iterations)
    optimiser = torch.optim.Adam(cnn.parameters(), lr=5e-3)
    for images, labels in torch.utils.data.DataLoader(data, batch_size=64):
        optimiser.zero_grad()
        nn.functional.cross_entropy(cnn(images), labels).backward()
        optimiser.step()
    return cnn.eval()


def raster(axis: plt.Axes, spikes: torch.Tensor) -> None:
    """Spike raster of ``(num_steps, neurons)`` (like ``snntorch.spikeplot.raster``, which
    needs pandas)."""
    steps, neurons = torch.nonzero(spikes, as_tuple=True)
    axis.scatter(steps.numpy(), neurons.numpy(), s=40, c="black", marker="|")
    axis.set_xlim(-0.5, spikes.shape[0] - 0.5)
    axis.set_ylim(-0.5, spikes.shape[1] - 0.5)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default="snntorch_swap_and_convert.png", help="figure path")
    parser.add_argument("--quick", action="store_true", help="a few iterations (seconds)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    num_steps = 8
    iterations = 4 if args.quick else 60
    images, labels = mnist_split("eval", limit=64 if args.quick else 2000).tensors
    results: dict[str, float] = {}

    # 1a. The standard network: snn.Leaky neurons, Bernoulli rate-coded inputs (spikegen.rate).
    leaky = Net(lambda: snn.Leaky(beta=0.95))
    torch.manual_seed(0)
    leaky_losses = train(
        leaky, lambda x: snntorch.spikegen.rate(x, num_steps=num_steps), iterations
    )
    results["leaky_accuracy"] = accuracy(
        lambda x: leaky(snntorch.spikegen.rate(x.flatten(1), num_steps=num_steps))[0].sum(0).argmax(1),
        images, labels,
    )  # fmt: skip

    # 1b. Swap the neuron: one line. Deterministic sigma-delta inputs replace spikegen.rate.
    # snn.Leaky(beta=0.95, spike_grad=...)  ->  ICRateNeuron(spike_grad=...): no leak, so no beta
    torch.manual_seed(0)
    swapped = Net(lambda: ICRateNeuron(spike_grad=snntorch.surrogate.fast_sigmoid(slope=5)))
    swapped_losses = train(swapped, lambda x: rate_sigma_delta(x, num_steps), iterations)
    results["swapped_loss_first"], results["swapped_loss_last"] = (
        swapped_losses[0],
        swapped_losses[-1],
    )
    results["swapped_accuracy"] = accuracy(
        lambda x: swapped(rate_sigma_delta(x.flatten(1), num_steps))[0].sum(0).argmax(1),
        images, labels,
    )  # fmt: skip
    print(
        f"Leaky network:        accuracy {results['leaky_accuracy']:.3f} (loss {leaky_losses[-1]:.3f})"
    )
    print(
        f"ICRateNeuron network: accuracy {results['swapped_accuracy']:.3f} (loss {swapped_losses[-1]:.3f})"
    )

    # 2. Convert a trained CNN: an snnTorch-style model, spk_rec/mem_rec recorded time-first.
    cnn = train_cnn(iterations=8 if args.quick else 120)
    calibration = [mnist_split("train", limit=256).tensors[0]]
    snn_model = convert(cnn, ICRate(steps=16), calibration, num_steps=16)
    with torch.no_grad():
        spk_rec, mem_rec = snn_model(images[:1])
    results["ann_accuracy"] = accuracy(lambda x: cnn(x).argmax(1), images, labels)
    results["snn_accuracy"] = accuracy(snn_model.predict, images, labels)
    print(
        f"CNN: ANN accuracy {results['ann_accuracy']:.3f}, converted SNN {results['snn_accuracy']:.3f}"
    )

    # 3. Plot: the swapped network's output raster and hidden membranes, and the converted CNN.
    with torch.no_grad():
        spk2, _, mem1 = swapped(rate_sigma_delta(images[:1].flatten(1), num_steps))
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    raster(axes[0], spk2[:, 0])
    axes[0].set(title="ICRateNeuron net: output spikes", xlabel="time step", ylabel="class")
    axes[1].plot(mem1[:, 0, :8].numpy())
    axes[1].axhline(ICRate().threshold, ls="--", c="grey")
    axes[1].set(title="hidden membranes (v0 = 0.5)", xlabel="time step", ylabel="v")
    raster(axes[2], spk_rec[:, 0])
    axes[2].set(
        title=f"converted CNN: output spikes (label {labels[0].item()})", xlabel="time step"
    )
    if mem_rec is not None:
        twin = axes[2].twinx()
        twin.plot(mem_rec[:, 0, labels[0]].numpy(), c="tab:red")
        twin.set_ylabel("membrane of the true class", color="tab:red")
    figure.tight_layout()
    figure.savefig(args.plot, dpi=100)
    plt.close(figure)
    print(f"figure written to {args.plot}")
    return results


if __name__ == "__main__":
    main()
