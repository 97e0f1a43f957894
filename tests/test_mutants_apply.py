"""Every deliberate bug of ``tests/mutants.py`` still applies to the code it targets.

Running the mutants takes minutes, so CI does not; this keeps their anchors from silently going
stale when the code they mutate moves (each original text must occur exactly once).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mutants():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("project_mutants", ROOT / "tests" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclass resolves its annotations through it
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.MUTANTS


@pytest.mark.parametrize("mutant", _mutants(), ids=lambda m: m.name)
def test_mutant_applies_once_and_its_tests_exist(mutant) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.original) == 1, (
        f"{mutant.name}: anchor not found once in {mutant.path}"
    )
    assert mutant.original != mutant.mutated
    assert all((ROOT / test).exists() for test in mutant.tests)
