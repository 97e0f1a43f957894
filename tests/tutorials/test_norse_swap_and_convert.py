"""The Norse tutorial runs in quick mode and writes its plot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import require

TUTORIAL = Path(__file__).parents[2] / "tutorials" / "norse_swap_and_convert.py"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_norse_tutorial_quick_mode_writes_plot(tmp_path):
    require("norse")
    require("matplotlib")
    spec = importlib.util.spec_from_file_location("norse_swap_and_convert", TUTORIAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--plot", str(tmp_path / "norse.png")])
    assert (tmp_path / "norse.png").stat().st_size > 0
    assert result["max_error"] <= 1 / (2 * result["steps"])
    assert len(result["accuracy"]) == 1 + len(module.ENCODINGS)
    assert all(0.0 <= value <= 1.0 for value in result["accuracy"].values())
