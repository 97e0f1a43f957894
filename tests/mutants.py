"""Deliberate bugs the test suite must catch: apply each to a copy of the project, run the tests
that should see it, and report whether they fail ("killed") or pass ("survived").

Run from the repository root (about 5 minutes on 2 CPU cores)::

    .venv/bin/python tests/mutants.py            # every mutant
    .venv/bin/python tests/mutants.py bias-dropped

Exit status 1 if any mutant survives. The copy lives in a temporary folder; the working tree is
never modified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_TESTS = ("tests/test_reference_twin.py",)
NETX_TESTS = ("tests/export/test_netx_reference.py",)


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant(
        "icrate-layer-ignores-v0",
        "snn_encodings/conversion/rules/icrate.py",
        "return torch.zeros_like(like) + v0.to(like.dtype)",
        "return torch.zeros_like(like)",
        REFERENCE_TESTS,
    ),
    Mutant(
        "icrate-twin-shift-zero",
        "snn_encodings/conversion/rules/icrate.py",
        "return self.spec.steps, self.spec.default_v0 / self.spec.threshold, 1.0",
        "return self.spec.steps, 0.0, 1.0",
        REFERENCE_TESTS,
    ),
    Mutant(
        "netx-zero-reset-latency-k-1",
        "snn_encodings/export/icrate_netx.py",
        'metadata=metadata(network, k, "zero")',
        'metadata=metadata(network, k - 1, "zero")',
        NETX_TESTS,
    ),
    Mutant(
        "netx-zero-reset-weights-s-1",
        "snn_encodings/export/icrate_netx.py",
        "w_int = np.rint(w * s).astype(np.int64)",
        "w_int = np.rint(w * (s - 1)).astype(np.int64)",
        NETX_TESTS,
    ),
    Mutant(
        "bias-dropped",
        "snn_encodings/conversion/synapse.py",
        'self.register_buffer("bias", (bias / channel_view(scale, features)).clone())',
        'self.register_buffer("bias", (bias * 0).clone())',
        REFERENCE_TESTS,
    ),
)


def _copy_project(target: Path) -> None:
    for name in ("snn_encodings", "adapters", "tests"):
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", target / "pyproject.toml")


def run(mutant: Mutant) -> bool:
    """Apply ``mutant`` to a fresh copy and run its tests; ``True`` if they fail (killed)."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as folder:
        copy = Path(folder)
        _copy_project(copy)
        source = copy / mutant.path
        text = source.read_text()
        if text.count(mutant.original) != 1:
            raise SystemExit(f"{mutant.name}: the original text is not found once in {mutant.path}")
        source.write_text(text.replace(mutant.original, mutant.mutated))
        environment = dict(os.environ, PYTHONPATH=str(copy))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
            cwd=copy,
            env=environment,
            capture_output=True,
            text=True,
        )
        return result.returncode == 1  # 1: tests failed (2-4: the copy is broken)


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    survived = []
    for mutant in chosen:
        killed = run(mutant)
        print(f"{mutant.name:32s} {'killed' if killed else 'SURVIVED'}", flush=True)
        if not killed:
            survived.append(mutant.name)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
