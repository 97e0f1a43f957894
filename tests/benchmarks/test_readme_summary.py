"""The README's results summary is generated from the benchmark's results file, never hand-edited."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def summary():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_summary", ROOT / "benchmarks" / "summary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_readme_summary_is_the_generated_block(summary) -> None:  # type: ignore[no-untyped-def]
    results = json.loads((ROOT / "benchmarks" / "results" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert summary.readme_block(results) in readme


def test_summary_picks_the_lowest_latency_within_tolerance(summary) -> None:  # type: ignore[no-untyped-def]
    def row(method: str, latency: int, accuracy: float) -> dict[str, object]:
        return {"method": method, "variant": "v", "steps": latency, "latency": latency,
                "accuracy": accuracy, "synops_per_image": None}

    rows = [row("ANN", 1, 0.98), row("a", 4, 0.90), row("a", 8, 0.976), row("a", 16, 0.979),
            row("b", 2, 0.50), row("b", 4, 0.60)]
    picked = summary.pick_rows(rows, tolerance=0.5)
    assert [(r["method"], r["latency"]) for r in picked] == [("ANN", 1), ("a", 8), ("b", 4)]


def test_replace_block_refuses_a_readme_without_markers(summary) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="results-summary"):
        summary.replace_block("# no markers", "x")


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?://|#)([^)#]+)", readme)
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing, f"README links to missing files: {missing}"
