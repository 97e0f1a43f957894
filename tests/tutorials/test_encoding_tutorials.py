"""The three encoding tutorials run in quick mode, write their plots and print sane numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import require

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, tmp_path: Path) -> tuple[ModuleType, dict]:
    require("matplotlib")
    plot = tmp_path / f"{name}.png"
    module = _load(name)
    result = module.main(["--quick", "--plot", str(plot)])
    assert plot.stat().st_size > 0
    return module, result


def test_icrate_tutorial_half_threshold_start_rounds_instead_of_flooring(
    tmp_path: Path, mnist_cache: str
) -> None:
    module, result = _run("icrate_rate_coding", tmp_path)
    steps = result["steps"]
    curves = result["transfer"]
    inside = (curves["z"] >= 0) & (curves["z"] <= 1)
    zero_error = (curves["zero"] - curves["z"])[inside]
    half_error = (curves["ann"] - curves["z"])[inside]
    assert half_error.abs().max() <= 1 / (2 * steps) + 1e-12
    assert zero_error.max() <= 1e-12 < zero_error.abs().max()  # the floor never overshoots
    assert abs(float(half_error.mean())) < abs(float(zero_error.mean()))
    for trace in result["traces"].values():  # count + residual recovers the input exactly
        assert trace["compensated"].tolist() == pytest.approx(list(module.CURRENTS), abs=1e-12)
    bursts = result["bursts"]  # signed neurons count what the total input asks for, any order
    assert torch.equal(bursts["signed"], bursts["ideal"])
    assert (
        bursts["plain"][0] == bursts["ideal"][0]
        and (bursts["plain"][1:] > bursts["ideal"][1:]).all()
    )
    accuracy = result["accuracy"]
    assert all(0.0 <= a <= 1.0 for curve in accuracy.values() for a in curve.values())
    plain, fixed = accuracy["plain rate (v0 = 0)"], accuracy["v0 = θ/2 + compensation"]
    assert fixed[min(fixed)] > plain[min(plain)]  # at the lowest T the IC-SNN fixes help


def test_radix_tutorial_snn_equals_twin_exactly(tmp_path: Path, mnist_cache: str) -> None:
    _, result = _run("radix_coding", tmp_path)
    assert result["example"][8] == ("11001000", 0.78125)
    assert result["example"][4] == ("1100", 0.75)
    timing = result["timing"]
    assert timing["decoded"].tolist() == timing["twin"].tolist()
    comparison = result["comparison"]
    assert comparison["max_difference"] == 0.0
    assert comparison["identical"] == comparison["samples"]
    assert comparison["snn_accuracy"] == comparison["twin_accuracy"]
    assert comparison["snn_accuracy"] > 0.5


def test_quartz_tutorial_reports_early_spikes_and_operations(
    tmp_path: Path, mnist_cache: str
) -> None:
    _, result = _run("quartz_ttfs", tmp_path)
    timing = result["timing"]
    # Figure 1 of Lenz et al. with K = 8: decode-phase spike, rectifier at 3K, then one neuron
    # whose membrane crosses during the encode phase: early in paper mode, held in exact mode
    assert timing["times"].tolist() == [20, 24, 13, 17]
    assert timing["values"].tolist() == [0.5, 0.0, 1.375, 0.875]
    assert timing["twin"].tolist() == [0.5, 0.0, 0.875, 0.875]
    mnist = result["mnist"]
    exact, paper = mnist["exact"], mnist["paper"]
    for mode in (exact, paper):
        ops = mode["ops"]
        assert ops.total == ops.synops + 2 * ops.neurons * 16
        assert ops.synops > 0 and ops.neurons > 0
        assert mode["snn_accuracy"] > 0.5
        assert mode["clean_identical"] == mode["clean"] > 0  # exact wherever nothing fired early
    assert exact["early_fraction"] == 0.0
    assert exact["identical"] == exact["samples"]
    assert exact["snn_accuracy"] == exact["twin_accuracy"]
    assert 0.0 < paper["early_fraction"] < 0.5
    assert 0 < paper["identical"] <= paper["samples"]
