"""Evaluation throughput of a converted network with 1 and 2 gloo processes on this machine.

Run ``python benchmarks/distributed_throughput.py [--images N] [--steps T] [--repeats R]``. The network (the
reference ``convnet`` trained by :func:`snn_encodings.models.train_mnist`, converted to
``ICRate(steps=T)``) is converted once and saved with :func:`save_network`; every configuration
loads it and runs :func:`snn_encodings.evaluate` on the first ``N`` images of the MNIST evaluation
split:

- 1 process, 1 thread;
- 1 process, 2 threads (torch's intra-op parallelism, for comparison);
- 2 processes, 1 thread each, ``evaluate(..., distributed=True)`` over ``shard_loader`` shards
  (gloo, file rendezvous), timed from a barrier after loading to the merged result.

Each configuration is timed ``R`` times; the median counts. Process start-up (importing
torch) is not timed. Writes
``benchmarks/results/distributed_throughput.json`` (atomically) with images per second, the
2-process / 1-process ratio, and the machine's CPU count and load average: on a shared machine
with few cores the ratio says little about a dedicated node.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from snn_encodings import ICRate, convert, evaluate
from snn_encodings.conversion import load_network, save_network
from snn_encodings.data.mnist import mnist_split
from snn_encodings.distributed import shard_loader
from snn_encodings.models import train_mnist

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 100


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    os.replace(handle.name, path)


def _summary(
    processes: int, threads: int, times: list[float], correct: int, samples: int
) -> dict[str, Any]:
    seconds = statistics.median(times)
    return {
        "processes": processes,
        "threads_per_process": threads,
        "seconds_median": seconds,
        "seconds_all": times,
        "images_per_s": samples / seconds,
        "correct": correct,
        "samples": samples,
    }


def _single(network_path: Path, images: int, threads: int, repeats: int) -> dict[str, Any]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        network = load_network(network_path)
        loader = shard_loader(mnist_split("eval", limit=images), BATCH)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = evaluate(network, loader, progress=False)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return _summary(1, threads, times, result.correct, result.samples)


def _worker(rank: int, world: int, folder: str, images: int, repeats: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    try:
        network = load_network(Path(folder) / "network.pt")
        loader = shard_loader(mnist_split("eval", limit=images), BATCH)
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            result = evaluate(network, loader, progress=False, distributed=True)
            times.append(time.perf_counter() - start)
        if rank == 0:
            torch.save(
                {"times": times, "correct": result.correct, "samples": result.samples},
                Path(folder) / "distributed.pt",
            )
    finally:
        dist.destroy_process_group()


def _distributed(folder: Path, images: int, world: int, repeats: int) -> dict[str, Any]:
    mp.spawn(_worker, args=(world, str(folder), images, repeats), nprocs=world)
    measured = torch.load(folder / "distributed.pt", weights_only=True)
    return _summary(world, 1, measured["times"], measured["correct"], measured["samples"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=2000, help="evaluation images (default: all 2000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per configuration (default 5)"
    )
    parser.add_argument("--steps", type=int, default=16, help="IC-rate time steps (default 16)")
    args = parser.parse_args()

    ann = train_mnist("convnet", epochs=1, progress=False)
    calibration = shard_loader(mnist_split("train", limit=1000), 250)
    spec = ICRate(steps=args.steps)
    network = convert(ann, spec, calibration)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        save_network(network, Path(folder) / "network.pt")
        runs = [
            _single(Path(folder) / "network.pt", args.images, threads=1, repeats=args.repeats),
            _single(Path(folder) / "network.pt", args.images, threads=2, repeats=args.repeats),
            _distributed(Path(folder), args.images, world=2, repeats=args.repeats),
        ]
    load_after = os.getloadavg()
    one, two = runs[0], runs[2]
    if (one["correct"], one["samples"]) != (two["correct"], two["samples"]):
        raise SystemExit(f"distributed evaluation disagrees with one process: {two} vs {one}")
    data = {
        "benchmark": "evaluation throughput, 1 vs 2 gloo processes",
        "network": "convnet (train_mnist epochs=1) converted to " + repr(spec),
        "images": args.images,
        "batch_size_per_process": BATCH,
        "repeats": args.repeats,
        "runs": runs,
        "ratio_2_processes_over_1": two["images_per_s"] / one["images_per_s"],
        "ratio_2_processes_over_1_process_2_threads": two["images_per_s"] / runs[1]["images_per_s"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_before_after": [load_before[0], load_after[0]],
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "note": (
            f"Measured in one run ({args.repeats} repeats per configuration, median) on a machine with {os.cpu_count()} CPU cores shared with other work "
            f"(1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after): the "
            "ratio is noisy and bounded by the free cores, not a statement about a dedicated node; "
            "the 1-process, 2-thread run suffers most from other load (its intra-op threads wait "
            "for each other). "
            "Start-up (importing torch, loading the network) is not timed."
        ),
    }
    _atomic_json(RESULTS / "distributed_throughput.json", data)
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
