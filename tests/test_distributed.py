"""Distributed calibration, evaluation and training: two gloo processes on CPU against one process.

One module-scoped fixture starts the two processes once (starting Python with torch is the slow
part) and runs every scenario in them; the tests compare what they wrote with single-process runs.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from snn_encodings import ICRate, convert, evaluate, finetune
from snn_encodings.cli import main
from snn_encodings.conversion import load_network, save_network
from snn_encodings.data.mnist import mnist_split
from snn_encodings.distributed import (
    DistributedEvalSampler,
    check_eval_loader,
    init_from_env,
    is_main_process,
    shard_loader,
    wrap_ddp,
)
from snn_encodings.errors import ConversionError
from snn_encodings.functional.surrogate import fast_sigmoid
from snn_encodings.models import build

WORLD = 2
BATCH = 8
CALIBRATION = 96  # both shards hold 48 samples: all of them enter IC-rate's data-based init
EVALUATION = 45  # odd: DistributedSampler would pad the last shard with a repeated sample
TRAINING = 40
SPEC = ICRate(steps=8, init="data")
WORKER_THREADS = 1  # single-process references run with the same count (float sums then agree)


def _ann(hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _rank_batches(size: int, rank: int) -> list[list[int]]:
    """The index batches ``shard_loader`` gives process ``rank`` (so references see equal batches)."""
    indices = list(DistributedEvalSampler(range(size), num_replicas=WORLD, rank=rank))
    return [indices[i : i + BATCH] for i in range(0, len(indices), BATCH)]


def _same_batches(dataset: Any) -> DataLoader:
    """One process over all shards' batches, in the same batch compositions (bitwise-equal maths)."""
    batches = [b for rank in range(WORLD) for b in _rank_batches(len(dataset), rank)]
    return DataLoader(dataset, batch_sampler=batches)


@contextlib.contextmanager
def _worker_threads() -> Iterator[None]:
    """Run with the workers' thread count, so float sums are added in the same order as theirs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(WORKER_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _capture(step: Any) -> str:
    try:
        step()
    except ConversionError as error:
        return str(error)
    return "no error"


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(WORKER_THREADS)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        root = Path(folder)
        ann = _ann()
        ann.load_state_dict(torch.load(root / "ann.pt", weights_only=True))
        calibration = mnist_split("train", limit=CALIBRATION)
        results: dict[str, Any] = {"main": is_main_process(), "env": init_from_env()}

        network = convert(ann, SPEC, shard_loader(calibration, BATCH), distributed=True)
        results["convert"] = network.state_dict()
        fixed = convert(
            ann,
            SPEC,
            shard_loader(calibration, BATCH),
            percentile="default",
            per_channel=False,
            distributed=True,
        )
        results["convert_fixed"] = fixed.state_dict()
        maximum = convert(
            ann, SPEC, shard_loader(calibration, BATCH), percentile=None, distributed=True
        )
        results["convert_max"] = maximum.state_dict()

        loaded = load_network(root / "network.pt")
        evaluation = evaluate(
            loaded,
            shard_loader(mnist_split("eval", limit=EVALUATION), BATCH),
            progress=False,
            distributed=True,
        )
        results["evaluation"] = {
            "correct": evaluation.correct,
            "samples": evaluation.samples,
            "spikes": torch.tensor([c.spikes for c in evaluation.layers], dtype=torch.float64),
            "events": torch.tensor(
                [c.synaptic_events for c in evaluation.layers], dtype=torch.float64
            ),
        }

        training = Subset(mnist_split("train"), range(CALIBRATION, CALIBRATION + TRAINING))
        tuned = finetune(
            ann,
            SPEC,
            shard_loader(training, BATCH, training=True, shuffle=True),
            epochs=1,
            keep_best=False,  # the trained weights, even where the start validates better
            progress=False,
            distributed=True,
        )
        results["finetune"] = tuned.state_dict()

        torch.manual_seed(rank)  # the shards differ; DDP must still agree
        snn = load_network(root / "network.pt").train()
        for stage in snn.stages:
            if stage.neurons is not None:
                stage.neurons.surrogate = fast_sigmoid()
        results["snn_buffers"] = [name for name, _ in snn.named_buffers()]
        trained = wrap_ddp(snn)
        results["sync_buffers"] = getattr(
            trained, "forward_sync_buffers", getattr(trained, "broadcast_buffers", None)
        )
        optimiser = torch.optim.SGD(snn.parameters(), lr=0.1)
        for x, target in shard_loader(training, BATCH, training=True):
            optimiser.zero_grad()
            nn.functional.cross_entropy(trained(x), target).backward()
            optimiser.step()
        results["snn_trained"] = snn.state_dict()

        other = _ann(hidden=16 if rank == 1 else 32)
        results["mismatch_convert"] = _capture(
            lambda: convert(other, SPEC, shard_loader(calibration, BATCH), distributed=True)
        )
        shifted = _ann()
        shifted.load_state_dict(ann.state_dict())
        with torch.no_grad():
            shifted[1].bias.add_(rank * 1e-3)  # same shapes, other values on rank 1
        results["weights_convert"] = _capture(
            lambda: convert(shifted, SPEC, shard_loader(calibration, BATCH), distributed=True)
        )
        local = convert(shifted, SPEC, shard_loader(calibration, BATCH))  # differs on rank 1
        results["weights_evaluate"] = _capture(
            lambda: evaluate(local, shard_loader(calibration, BATCH), progress=False, distributed=True)
        )
        steps = 8 if rank == 0 else 4
        results["mismatch_evaluate"] = _capture(
            lambda: evaluate(
                loaded,
                shard_loader(calibration, BATCH),
                steps=steps,
                progress=False,
                distributed=True,
            )
        )
        cli = [
            "--quiet",
            "--calibration-limit",
            "60",
            "--architecture",
            "mlp",
            str(root / "mlp.pt"),
            "--spec",
            "icrate:steps=4",
        ]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            results["cli_convert"] = main(
                ["convert", *cli, "--output", str(root / f"cli-{rank}.pt")]
            )
            results["cli_evaluate"] = main(["evaluate", "--eval-limit", "21", *cli])
        results["cli_printed"] = printed.getvalue()
        torch.save(results, root / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train a small ANN, convert it in one process, run the two-process scenarios; read-only."""
    folder = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    ann = _ann()
    optimiser = torch.optim.Adam(ann.parameters(), lr=3e-3)
    for x, target in DataLoader(mnist_split("train", limit=1024), batch_size=64):
        optimiser.zero_grad()
        nn.functional.cross_entropy(ann(x), target).backward()
        optimiser.step()
    ann.eval()
    torch.save(ann.state_dict(), folder / "ann.pt")
    torch.save(build("mlp").state_dict(), folder / "mlp.pt")
    with _worker_threads():
        network = convert(ann, SPEC, _same_batches(mnist_split("train", limit=CALIBRATION)))
    save_network(network, folder / "network.pt")

    context = mp.start_processes(
        _worker, args=(str(folder),), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the distributed worker processes did not finish in 240 s")
    ranks = [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    return {"ann": ann, "network": network, "ranks": ranks, "folder": folder}


def _assert_same_state(
    got: dict[str, torch.Tensor],
    want: dict[str, torch.Tensor],
    *,
    approximate: tuple[str, ...] = (),
) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        if name.endswith(approximate):
            torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6)
        else:
            assert torch.equal(got[name], value), name


def test_distributed_convert_matches_single_process_calibration(setting: dict[str, Any]) -> None:
    calibration = mnist_split("train", limit=CALIBRATION)
    with _worker_threads():
        single = convert(
            setting["ann"],
            SPEC,
            _same_batches(calibration),
            percentile="default",
            per_channel=False,
        )
        single_max = convert(setting["ann"], SPEC, _same_batches(calibration), percentile=None)
    for rank in setting["ranks"]:
        # scales (folded into weights, biases and gains) are exact; IC-rate's measured v0 is a
        # float64 mean summed in another order, so equal to rounding
        _assert_same_state(rank["convert_fixed"], single.state_dict(), approximate=("v0",))
        _assert_same_state(rank["convert_max"], single_max.state_dict(), approximate=("v0",))


def test_distributed_scale_search_agrees_across_processes(setting: dict[str, Any]) -> None:
    """The default scale search scores each candidate on every process's own samples and sums
    the errors, so all processes choose the same scales. (Its samples are each shard's first
    ones, so the choice may differ from a single process that keeps the first samples of the
    whole set; fixed calibration is compared with a single process above.)"""
    first, *others = setting["ranks"]
    for rank in others:
        _assert_same_state(rank["convert"], first["convert"])


def test_distributed_convert_merges_icrate_data_init(setting: dict[str, Any]) -> None:
    v0 = [rank["convert"]["stages.0.neurons.v0"] for rank in setting["ranks"]]
    assert v0[0].shape == (32,)
    assert torch.equal(v0[0], v0[1])
    assert not torch.equal(v0[0], torch.full_like(v0[0], SPEC.default_v0))


def test_distributed_evaluate_counts_every_sample_once(setting: dict[str, Any]) -> None:
    dataset = mnist_split("eval", limit=EVALUATION)
    assert DistributedSampler(dataset, num_replicas=WORLD, rank=0).total_size == EVALUATION + 1
    with _worker_threads():
        single = evaluate(setting["network"], _same_batches(dataset), progress=False)
    for rank in setting["ranks"]:
        got = rank["evaluation"]
        assert (
            (got["correct"], got["samples"])
            == (single.correct, single.samples)
            == (single.correct, EVALUATION)
        )
        spikes = torch.tensor([c.spikes for c in single.layers], dtype=torch.float64)
        events = torch.tensor([c.synaptic_events for c in single.layers], dtype=torch.float64)
        # spike counts of neuron layers are integers, so exact; the analog input's "spikes" (and
        # the events they cause) are float sums, whose rounding depends on torch's thread count
        assert torch.equal(got["spikes"][1:], spikes[1:])
        torch.testing.assert_close(got["spikes"], spikes, rtol=1e-6, atol=0)
        torch.testing.assert_close(got["events"], events, rtol=1e-6, atol=0)


def test_distributed_finetune_gives_same_weights_on_every_process(setting: dict[str, Any]) -> None:
    first, second = (rank["finetune"] for rank in setting["ranks"])
    _assert_same_state(first, second)
    assert not torch.equal(first["1.weight"], setting["ann"].state_dict()["1.weight"])


def test_distributed_snn_surrogate_training_gives_same_weights(setting: dict[str, Any]) -> None:
    first, second = (rank["snn_trained"] for rank in setting["ranks"])
    _assert_same_state(first, second)
    start = setting["network"].state_dict()
    weights = [name for name in start if name.endswith("weight")]
    assert len(weights) == 2
    assert all(not torch.equal(first[name], start[name]) for name in weights)  # hidden layer too
    rank = setting["ranks"][0]
    assert rank["sync_buffers"] is False
    assert not any("state" in name for name in rank["snn_buffers"])


def test_distributed_helpers_know_their_rank(setting: dict[str, Any]) -> None:
    assert [rank["main"] for rank in setting["ranks"]] == [True, False]
    assert all(rank["env"] for rank in setting["ranks"])


def test_distributed_convert_rejects_models_that_differ(setting: dict[str, Any]) -> None:
    for rank in setting["ranks"]:
        assert "the model differs between processes: rank(s) [1]" in rank["mismatch_convert"]
        assert "the model differs between processes: rank(s) [1]" in rank["mismatch_evaluate"]


def test_distributed_convert_and_evaluate_reject_weights_that_differ(setting: dict[str, Any]) -> None:
    for rank in setting["ranks"]:
        for step in ("weights_convert", "weights_evaluate"):
            assert "the model's weights differ between processes: rank(s) [1]" in rank[step]


def test_cli_under_a_process_group_prints_and_writes_on_rank_0_only(
    setting: dict[str, Any],
) -> None:
    first, second = setting["ranks"]
    assert (
        first["cli_convert"],
        first["cli_evaluate"],
        second["cli_convert"],
        second["cli_evaluate"],
    ) == (0, 0, 0, 0)
    assert "wrote" in first["cli_printed"] and "accuracy %" in first["cli_printed"]
    assert second["cli_printed"] == ""
    assert (setting["folder"] / "cli-0.pt").exists() and not (
        setting["folder"] / "cli-1.pt"
    ).exists()
    load_network(setting["folder"] / "cli-0.pt")


def test_distributed_path_without_process_group_names_the_fix() -> None:
    loader = DataLoader(mnist_split("eval", limit=8), batch_size=4)
    with pytest.raises(
        ConversionError, match="needs an initialised torch.distributed process group.*torchrun"
    ):
        convert(_ann(), SPEC, loader, distributed=True)
    with pytest.raises(ConversionError, match="init_from_env"):
        evaluate(_ann(), loader, distributed=True)
    with pytest.raises(ConversionError, match="needs an initialised"):
        finetune(_ann(), SPEC, loader, distributed=True)
    with pytest.raises(ConversionError, match="needs an initialised"):
        wrap_ddp(_ann())


def test_distributed_path_rejects_a_non_group_argument() -> None:
    loader = DataLoader(mnist_split("eval", limit=8), batch_size=4)
    with pytest.raises(ConversionError, match="distributed must be a bool"):
        evaluate(_ann(), loader, distributed="yes")  # type: ignore[arg-type]


def test_evaluate_rejects_a_padding_distributed_sampler() -> None:
    dataset = mnist_split("eval", limit=EVALUATION)
    loader = DataLoader(
        dataset, batch_size=BATCH, sampler=DistributedSampler(dataset, num_replicas=WORLD, rank=0)
    )
    with pytest.raises(ConversionError, match="repeats 1 sample.*shard_loader"):
        check_eval_loader(loader)
    exact = DataLoader(
        dataset,
        batch_size=BATCH,
        sampler=DistributedSampler(mnist_split("eval", limit=44), num_replicas=WORLD, rank=0),
    )
    check_eval_loader(exact)


def test_eval_sampler_shards_cover_every_index_once() -> None:
    shards = [
        list(DistributedEvalSampler(range(7), num_replicas=3, rank=r, shuffle=True, seed=1))
        for r in range(3)
    ]
    assert sorted(i for shard in shards for i in shard) == list(range(7))
    assert [len(s) for s in shards] == [3, 2, 2]
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedEvalSampler(range(7), num_replicas=2, rank=2)


def test_helpers_without_process_group_act_as_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert init_from_env() is False
    assert is_main_process()
    loader = shard_loader(mnist_split("eval", limit=10), 4)
    assert sum(len(x) for x, _ in loader) == 10
