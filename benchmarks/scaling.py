"""Cost of the spiking networks as multiples of a float32 ANN pass, and how it scales.

    python benchmarks/scaling.py            # writes results/scaling.{json,md} and docs/benchmarks.md
    python benchmarks/scaling.py --quick    # smaller smoke run, written to --out only

Everything is timed in one run, the fastest of at least 3 warm calls (more, up to 50, until
0.3 s are spent), on the same inputs, so the ratios are comparable within the run. Models: the demo convnet (trained, cached) on MNIST images and slim
zoo models (random init with BatchNorm statistics) on random 32x32 inputs. Rows:

- radix exact (closed form), Quartz default (closed form; exact mode), the step simulations
  for reference: time / one ANN pass;
- IC-rate and SpikingJelly's rate-converted network at equal T: time / (ANN pass x T);
- convert: time of ``convert`` / one ANN pass over the calibration data;
- the exact float chosen per layer (float32 / float64 layers);
- scaling tables: cost against T, depth (convnet, VGG-11, ResNet-18) and batch size;
- the process's peak resident memory after each model, against batch x T x neurons x 4 bytes.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import snn_encodings as se
from snn_encodings import zoo
from snn_encodings.data import mnist_split
from snn_encodings.models import train_mnist

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _best(fn: Any, repeats: int = 3, budget: float = 0.3) -> float:
    """CPU seconds of the fastest call of ``fn`` after one warm-up, no gradients: at least
    ``repeats`` calls, and more (up to 50) until ``budget`` seconds are spent, so that the
    millisecond calls the ratios compare are each the best of many.

    CPU time (``time.process_time``, one torch thread) rather than wall time, so that other
    processes sharing the machine inflate the ratios less."""
    with torch.no_grad():
        fn()
        times: list[float] = []
        while len(times) < repeats or (sum(times) < budget and len(times) < 50):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return min(times)


class _Counted:
    """An iterable of input batches that counts the batches handed out."""

    def __init__(self, batches: list[Tensor]) -> None:
        self.batches = batches
        self.served = 0

    def __iter__(self) -> Any:
        for batch in self.batches:
            self.served += 1
            yield batch


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_EVALUATE_MEMORY = """
import sys, torch
import snn_encodings as se
torch.set_num_threads(1)

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

network = se.load_network(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    network(x[:1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the high-water mark VmHWM to the current RSS
    before = status("VmRSS")
    network(x)
print(status("VmHWM") - before)
"""


def _evaluate_memory_mib(network: se.SpikingNetwork, x: Tensor) -> float:
    """Peak memory one call of ``network`` on ``x`` adds, MiB: in a fresh process that loads the
    saved network and ``x`` and warms up on one input, the high-water mark of its resident set
    (reset through ``/proc/self/clear_refs``, Linux) minus the resident set before the call."""
    with tempfile.TemporaryDirectory() as folder:
        saved, inputs = Path(folder) / "network.pt", Path(folder) / "x.pt"
        se.save_network(network, saved)
        torch.save(x, inputs)
        result = subprocess.run(
            [sys.executable, "-c", _EVALUATE_MEMORY, str(saved), str(inputs)],
            capture_output=True,
            text=True,
            check=True,
        )
    return float(result.stdout.split()[-1])


def _model(name: str, width: float, batch: int) -> tuple[nn.Module, Tensor]:
    """The model and ``batch`` inputs: the trained demo convnet on MNIST, else a seeded zoo model."""
    if name == "convnet":
        return train_mnist("convnet", epochs=8, progress=False), mnist_split("eval").tensors[0][
            :batch
        ]
    torch.manual_seed(0)
    model = zoo.set_batch_norm_stats(zoo.build(name, width=width), zoo.input_shape(name))
    generator = torch.Generator().manual_seed(1)
    return model, torch.rand((batch, *zoo.input_shape(name)), generator=generator)


def _spikingjelly_seconds(ann: nn.Module, x: Tensor, steps: int) -> float | None:
    """SpikingJelly's ann2snn rate network on ``x`` for ``steps`` steps (``None`` if unavailable)."""
    try:
        from spikingjelly.activation_based import ann2snn, functional
    except ImportError:
        return None
    try:
        snn = ann2snn.Converter(ann2snn.RateCodingRecipe([x], mode="max")).convert(
            copy.deepcopy(ann)
        )
    except Exception as error:  # its tracer or recipe may refuse a model; the row says so
        print(f"spikingjelly could not convert: {error}", file=sys.stderr)
        return None
    snn.eval()

    def run() -> None:
        functional.reset_net(snn)
        for _ in range(steps):
            snn(x)

    return _best(run)


def _dtypes(network: se.SpikingNetwork) -> str:
    network.exact_dtypes()
    chosen = [
        "2xf32" if stage.split else str(stage.exact_dtype).replace("torch.float", "f")
        for stage in network.stages
        if stage.exact_dtype is not None
    ]
    return " / ".join(f"{chosen.count(kind)} {kind}" for kind in ("f32", "2xf32", "f64"))


def _neurons(network: se.SpikingNetwork) -> int:
    return sum(int(torch.tensor(stage.shape).prod()) for stage in network.stages)


def _convert(
    ann: nn.Module, spec: Any, batches: list[Tensor]
) -> tuple[se.SpikingNetwork, float, float]:
    """The network, the CPU seconds of ``convert`` and its passes over the calibration batches
    (the first batch's look for an example counts as one batch)."""
    calibration = _Counted(batches)
    start = time.process_time()
    network = se.convert(ann, spec, calibration)
    seconds = time.process_time() - start
    return network, seconds, calibration.served / len(calibration.batches)


def _cost_rows(
    name: str, width: float, batch: int, steps: int, calibration: int
) -> list[dict[str, Any]]:
    """Ratios of every encoding on one model, same inputs, one run; ``convert`` calibrates on
    ``calibration`` inputs in batches of ``batch`` and is compared with one ANN pass over them."""
    ann, x = _model(name, width, max(batch, calibration))
    batches = list(x[:calibration].split(batch))
    x = x[:batch]
    ann_s = _best(lambda: ann(x))
    ann_calibration_s = _best(lambda: [ann(b) for b in batches])
    rows: list[dict[str, Any]] = []

    def row(what: str, seconds: float, reference: str, ratio: float, **extra: Any) -> None:
        rows.append(
            {
                "model": f"{name} (width {width})" if name != "convnet" else name,
                "what": what,
                "seconds": seconds,
                "reference": reference,
                "ratio": ratio,
                **extra,
            }
        )
        print(rows[-1], file=sys.stderr)

    specs = {
        f"radix exact T={6}": se.Radix(steps=6),
        "quartz exact t_max=16": se.Quartz(t_max=16),
        f"icrate T={steps}": se.ICRate(steps=steps),
    }
    for label, spec in specs.items():
        network, convert_s, passes = _convert(ann, spec, batches)
        seconds = _best(lambda: network(x))
        rate = label.startswith("icrate")
        reference = f"ANN x {steps}" if rate else "one ANN pass"
        row(
            label,
            seconds,
            reference,
            seconds / (ann_s * (steps if rate else 1)),
            dtypes=_dtypes(network) if not rate else "f32",
        )
        row(
            f"convert ({label.split()[0]}), {len(batches) * batch} images, {passes:g} passes "
            "over the data",
            convert_s,
            "one ANN pass over them",
            convert_s / ann_calibration_s,
        )
        if not rate:  # the step simulation, on 8 inputs against the ANN on the same 8
            network.use_fast_path = False
            few = x[:8]
            stepped = _best(lambda: network(few), repeats=1)
            row(
                f"{label}, step simulation (8 inputs)",
                stepped,
                "one ANN pass",
                stepped / _best(lambda: ann(few)),
            )
        network.use_fast_path = True
        activations = batch * network.spec.steps_per_layer * _neurons(network) * 4 / 2**20
        evaluate_mib = _evaluate_memory_mib(network, x)
        row(
            f"peak RSS after {label.split()[0]} (MiB)",
            0.0,
            "B x T x neurons x 4 B (MiB)",
            evaluate_mib / max(activations, 1e-9),
            peak_rss_mib=_peak_rss_mib(),
            evaluate_mib=evaluate_mib,
            activations_mib=activations,
        )
    sj = _spikingjelly_seconds(ann, x, steps)
    if sj is not None:
        row(f"spikingjelly ann2snn T={steps}", sj, f"ANN x {steps}", sj / (ann_s * steps))
    return rows


def _scaling(name: str, width: float, batch: int, steps_list: list[int]) -> list[dict[str, Any]]:
    """Cost against T (per encoding), as a multiple of one ANN pass."""
    ann, x = _model(name, width, batch)
    ann_s = _best(lambda: ann(x))
    rows = []
    for t in steps_list:
        for label, spec in (
            ("icrate", se.ICRate(steps=t)),
            ("quartz", se.Quartz(t_max=t)),
            ("radix", se.Radix(steps=min(t, 16))),
        ):
            network = se.convert(ann, spec, [x])
            rows.append({"T": t, "encoding": label, "ratio": _best(lambda: network(x)) / ann_s})
            print(rows[-1], file=sys.stderr)
    return rows


def _batch_scaling(batches: list[int]) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        ann, x = _model("convnet", 1.0, batch)
        ann_s = _best(lambda: ann(x))
        for label, spec in (
            ("icrate T=8", se.ICRate(steps=8)),
            ("quartz", se.Quartz()),
            ("radix", se.Radix()),
        ):
            network = se.convert(ann, spec, [x])
            ratio = _best(lambda: network(x)) / ann_s
            rows.append({"batch": batch, "encoding": label, "ratio": ratio})
            print(rows[-1], file=sys.stderr)
    return rows


def _markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks: cost against a float32 ANN pass",
        "",
        "Generated by `python benchmarks/scaling.py` (do not edit by hand). Machine: "
        f"{data['machine']}, {data['threads']} torch thread; CPU seconds (process time), the "
        "fastest of at least 3 warm calls (up to 50, until 0.3 s are spent). "
        f"{data['note']}",
        "",
        "Targets: radix exact and Quartz (default, closed form) at most 2x one ANN pass; "
        "IC-rate at most 1.0x ANN x T and faster than SpikingJelly's converted network at equal "
        "T; convert at most 5 ANN passes over its calibration data. The step simulations are "
        "what the framework views run. `float per layer` counts the layers the closed forms "
        "evaluate in float32, in two float32 parts (`2xf32`) and in float64. Convert "
        "calibrates on a set of its own (1 024 MNIST images for the convnet, 256 inputs for "
        "ResNet-18, in batches of the evaluation batch size) and is compared with one ANN "
        "pass over that set; its ratio includes a fixed cost (tracing, copying the layers, "
        "the exactness bounds, the scale search on at most 512 samples) that does not grow "
        "with the calibration data; its passes over the data are counted.",
        "",
        "## Cost per model (same run, same inputs)",
        "",
        "| model | what | seconds | reference | ratio | float per layer |",
        "|---|---|---|---|---|---|",
    ]
    for row in data["cost"]:
        if row["what"].startswith("peak RSS"):
            continue
        lines.append(
            f"| {row['model']} | {row['what']} | {row['seconds']:.4f} | {row['reference']} | "
            f"{row['ratio']:.2f}x | {row.get('dtypes', '')} |"
        )
    lines += [
        "",
        "## Peak memory",
        "",
        "One evaluate call on the batch above, in a fresh process that loaded the saved network "
        "(its resident set's high-water mark during the call minus the resident set before "
        "it, after a one-input warm-up), against the "
        "activations a window of the whole batch holds (B x T x neurons x 4 bytes; T is the "
        "window of one layer). The benchmark process's own peak is listed for reference.",
        "",
        "| model | encoding | evaluate peak (MiB) | B x T x neurons x 4 B (MiB) | process peak (MiB) |",
        "|---|---|---|---|---|",
    ]
    for row in data["cost"]:
        if row["what"].startswith("peak RSS"):
            lines.append(
                f"| {row['model']} | {row['what'].split()[3]} | {row['evaluate_mib']:.1f} | "
                f"{row['activations_mib']:.1f} | {row['peak_rss_mib']:.0f} |"
            )
    for title, key, column in (
        ("Cost against T (demo convnet), multiples of one ANN pass", "steps", "T"),
        ("Cost against depth (T=8 IC-rate, t_max=8 Quartz, radix T=8)", "depth", "model"),
        (
            "Cost against batch size (demo convnet), multiples of one ANN pass of that batch",
            "batch",
            "batch",
        ),
    ):
        rows = data[key]
        encodings = list(dict.fromkeys(row["encoding"] for row in rows))
        keys = list(dict.fromkeys(row[column] for row in rows))
        lines += [
            "",
            f"## {title}",
            "",
            f"| {column} | " + " | ".join(encodings) + " |",
            "|---|" + "---|" * len(encodings),
        ]
        for value in keys:
            cells = [
                next(
                    f"{r['ratio']:.1f}x" for r in rows if r[column] == value and r["encoding"] == e
                )
                for e in encodings
            ]
            lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--note", default="", help="conditions to record (e.g. machine load)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    quick = args.quick
    batch = 16 if quick else 128
    width = 0.125 if quick else 0.25
    cost = _cost_rows("convnet", 1.0, batch, 8, 4 * batch if quick else 1024)
    cost += _cost_rows("resnet18", width, batch // 4, 8, batch if quick else 256)
    steps = _scaling("convnet", 1.0, batch, [4, 16] if quick else [4, 8, 16, 32, 64])
    depth = []
    for name in ("convnet", "vgg11_bn", "resnet18"):
        for row in _scaling(name, 1.0 if name == "convnet" else width, batch // 2, [8]):
            depth.append({"model": name, **row})
    batches = _batch_scaling([1, 16] if quick else [1, 16, 128, 512])
    data = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "note": args.note,
        "cost": cost,
        "steps": steps,
        "depth": depth,
        "batch": batches,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(data, indent=2))
    text = _markdown(data)
    (args.out / "scaling.md").write_text(text)
    if not quick and args.out == RESULTS:
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
