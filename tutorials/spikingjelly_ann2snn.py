"""ann2snn with SpikingJelly's own converter: its default recipe next to ours.

In SpikingJelly's ann2snn style (``ann2snn.Converter(recipe).convert(ann)``, then step the
converted network ``T`` times, accumulate its output and read the accuracy after every step)
this script converts a small CNN trained on the MNIST images shipped with snn-encodings:

1. SpikingJelly's default ``RateCodingRecipe`` (``IFNode``, membrane starting at 0);
2. our ``recipe(ICRate(init="ann"), loader)``: the same ``RateCodingRecipe`` machinery, with our
   ``ICRateNode`` whose membrane starts at half the threshold (IC-SNN);
3. our recipe routed through the core converter (``via="core"``), for IC-rate at every ``T``
   and, at their own time window, for every other encoding the library defines.

It prints accuracy against steps and plots it to ``--plot`` (matplotlib, Agg backend).

Run: ``python tutorials/spikingjelly_ann2snn.py --plot acc.png`` (trains the CNN once, cached),
or ``--quick`` for a small smoke run (what the test suite runs).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from snn_encodings.adapters.spikingjelly import recipe
from spikingjelly.activation_based import ann2snn, functional
from torch import nn
from torch.utils.data import DataLoader

import snn_encodings
from snn_encodings.conversion import with_steps
from snn_encodings.data import mnist_split
from snn_encodings.models import build, train_mnist
from snn_encodings.specs import ALL_SPECS, ICRate, Quartz


def val(net: nn.Module, loader: DataLoader, steps: int) -> list[float]:
    """Accuracy after each of ``steps`` steps of a converted SpikingJelly network (``'s'``)."""
    net.eval()
    corrects = torch.zeros(steps)
    total = 0
    with torch.no_grad():
        for img, label in loader:
            functional.reset_net(net)
            out = None
            for t in range(steps):
                step = net(img)
                out = step if out is None else out + step
                corrects[t] += (out.argmax(1) == label).sum()
            total += len(label)
    return (corrects / total).tolist()


def quick_ann(images: int = 1000) -> nn.Module:
    """A CNN trained for one short pass (smoke runs only)."""
    torch.manual_seed(0)
    model = build("convnet")
    x, y = mnist_split("train", limit=images).tensors
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for start in range(0, len(x), 50):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x[start : start + 50]), y[start : start + 50]).backward()
        optimiser.step()
    return model.eval()


def main(argv: list[str] | None = None) -> dict[str, dict[int, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, default=Path("spikingjelly_ann2snn.png"))
    parser.add_argument("--steps", type=int, default=32, help="largest T")
    parser.add_argument("--eval-limit", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_limit = min(args.steps, 8), min(args.eval_limit, 100)
    torch.manual_seed(0)

    ann = quick_ann() if args.quick else train_mnist("convnet", epochs=4)
    calibration = DataLoader(
        mnist_split("train", limit=256 if args.quick else 4000), batch_size=128
    )
    test = DataLoader(mnist_split("eval", limit=args.eval_limit), batch_size=100)
    x, y = test.dataset.tensors
    with torch.no_grad():
        ann_accuracy = (ann(x).argmax(1) == y).float().mean().item()
    print(f"ANN accuracy: {ann_accuracy:.4f}")

    curves: dict[str, dict[int, float]] = {}
    steps = list(range(1, args.steps + 1))

    default = ann2snn.RateCodingRecipe(calibration, mode="max")
    snn = ann2snn.Converter(default).convert(copy.deepcopy(ann))
    curves["SpikingJelly RateCodingRecipe (IFNode, v0=0)"] = dict(
        zip(steps, val(snn, test, args.steps))
    )

    ours = recipe(ICRate(steps=args.steps, init="ann"), calibration, mode="max")
    snn = ann2snn.Converter(ours).convert(copy.deepcopy(ann))
    curves["recipe(ICRate) via RateCodingRecipe (v0=θ/2)"] = dict(
        zip(steps, val(snn, test, args.steps))
    )

    # via="core" returns a WholeRun: one call simulates every step (no T loop, no reset_net);
    # its .network is the core SpikingNetwork.
    core_recipe = recipe(ICRate(steps=args.steps), calibration, via="core")
    network = ann2snn.Converter(core_recipe).convert(copy.deepcopy(ann)).network
    sweep = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= args.steps]
    curves["recipe(ICRate, via='core')"] = {
        t: snn_encodings.evaluate(with_steps(network, t), test, progress=False).accuracy
        for t in sweep
    }
    for spec_type in ALL_SPECS:
        if spec_type is ICRate:
            continue
        # Quartz(analytic=True): the closed-form simulation, ~200x faster than stepping
        spec = Quartz(analytic=True) if spec_type is Quartz else spec_type()
        converted = ann2snn.Converter(recipe(spec, calibration)).convert(copy.deepcopy(ann))
        result = snn_encodings.evaluate(converted.network, test, progress=False)
        curves[f"recipe({spec_type.__name__}(), via='core')"] = {
            spec.steps_per_layer: result.accuracy
        }

    for name, curve in curves.items():
        shown = {t: a for t, a in curve.items() if t in sweep or len(curve) == 1}
        print(f"{name}: " + ", ".join(f"T={t} {a:.4f}" for t, a in shown.items()))
    _plot(curves, ann_accuracy, args.plot)
    print(f"plot: {args.plot}")
    return curves


def _plot(curves: dict[str, dict[int, float]], ann_accuracy: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        marker = "o" if len(curve) < 10 else None
        axes.plot(list(curve), list(curve.values()), marker=marker, label=name)
    axes.axhline(ann_accuracy, color="grey", linestyle="--", label="ANN")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("time steps T")
    axes.set_ylabel("accuracy (shipped MNIST eval split)")
    axes.set_title("ann2snn in SpikingJelly: default recipe vs snn-encodings")
    axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
