"""The SpikingJelly ann2snn tutorial runs (quick mode) and writes its plot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import require

TUTORIAL = Path(__file__).resolve().parents[2] / "tutorials" / "spikingjelly_ann2snn.py"


def test_spikingjelly_tutorial_quick_run_writes_plot(tmp_path: Path) -> None:
    require("spikingjelly")
    require("matplotlib")
    spec = importlib.util.spec_from_file_location("spikingjelly_ann2snn", TUTORIAL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plot = tmp_path / "accuracy.png"
    curves = module.main(["--quick", "--plot", str(plot)])
    assert plot.stat().st_size > 0
    ours = curves["recipe(ICRate) via RateCodingRecipe (v0=θ/2)"]
    default = curves["SpikingJelly RateCodingRecipe (IFNode, v0=0)"]
    assert max(ours.values()) > 0.5
    assert sum(ours.values()) >= sum(default.values())
