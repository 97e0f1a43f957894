from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_quick_run_writes_results(tmp_path: Path, mnist_cache: str) -> None:
    require("spikingjelly")
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    methods = {row["method"] for row in data["rows"]}
    assert {"ANN", "icrate", "spikingjelly ann2snn"} <= methods
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in data["rows"])
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.csv").exists()
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert all(entry["same_predictions"] for entry in data["adapter_overhead"])


def test_residual_icrate_quick_run() -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_residual", ROOT / "benchmarks" / "residual_icrate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.run(100, [8])
    (row,) = report["rows"]
    assert 0 <= row["plain"] <= 100 and row["signed"] >= row["twin"] - 5
    assert row["default"] == "plain"  # 14 of 16 checked decisions agree at T = 8
    assert "| 8 |" in module._markdown(report)


def test_paper_mnist_quick_run(
    full_mnist_dir: Path, mnist_cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    require("spikingjelly")
    spec = importlib.util.spec_from_file_location(
        "bench_paper", ROOT / "benchmarks" / "paper_mnist.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0
    text = capsys.readouterr().out
    dense = {
        int(t): float(ops.replace(",", ""))
        for t, ops in re.findall(
            r"\| ours, Quartz t_max (\d+) \| search.*\| ([\d,]+) \| [\d,]+ \|", text
        )
    }
    nonzero = {
        int(t): float(ops.replace(",", ""))
        for t, ops in re.findall(r"t_max (\d+): syn\. ops ([\d,]+)", text)
    }
    assert dense.keys() == nonzero.keys() == {8, 16}
    assert dense[16] == 225_840  # every spike times its fan-out: the LeNet-5's MAC count
    assert all(0 < nonzero[t] < dense[t] for t in dense)  # MNIST pixels and ReLUs have zeros
    assert "on the SNN's accuracy" in text  # IC-rate fine-tuning selects on the SNN
