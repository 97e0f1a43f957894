"""Fixtures for the export tests: hand-built integer networks and the Lava subprocess runner."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from snn_encodings.export.layers import Cuba, IntNetwork, Layer

ROOT = Path(__file__).resolve().parents[2]
LAVA_PYTHON = (
    Path(os.environ.get("SNN_ENCODINGS_LAVA_VENV", ROOT / ".lava-venv")) / "bin" / "python"
)


def _lava_missing() -> str | None:
    if not LAVA_PYTHON.exists():
        return f"no Lava environment at {LAVA_PYTHON.parent.parent}; build it with: bash .ci/lava_env.sh"
    return None


@pytest.fixture
def lava() -> Callable[[Path, np.ndarray], dict[str, np.ndarray]]:
    """``lava(path, inputs, batch=False)`` runs a netx file in real Lava (fixed_pt) in the Lava venv.

    With ``batch=True`` ``inputs`` is ``(B, steps, *shape)`` and the results are stacked.

    Skips when the venv is missing; fails instead under SNN_ENCODINGS_REQUIRE_LAVA=1.
    """
    reason = _lava_missing()
    if reason is not None:
        if os.environ.get("SNN_ENCODINGS_REQUIRE_LAVA") == "1":
            pytest.fail(f"SNN_ENCODINGS_REQUIRE_LAVA=1 but {reason}")
        pytest.skip(reason)

    def run(path: Path, inputs: np.ndarray, batch: bool = False) -> dict[str, np.ndarray]:
        request = path.with_suffix(".in.npz")
        result = path.with_suffix(".out.npz")
        np.savez(request, path=str(path), inputs=np.asarray(inputs, dtype=np.int8), batch=batch)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run(
            [str(LAVA_PYTHON), "-m", "snn_encodings.export.lava_run", str(request), str(result)],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.fail(
                f"Lava run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        with np.load(result) as data:
            return {key: data[key] for key in data.files}

    return run


@pytest.fixture
def nets() -> dict[str, Callable[..., object]]:
    """Builders of hand-made integer networks and seeded input spikes."""
    return {"dense": dense_chain, "conv": conv_chain, "spikes": random_spikes, "cuba": cuba}


def cuba(v_th_mant: int = 40, i_decay: int = 4096, v_decay: int = 0, **init: np.ndarray) -> Cuba:
    return Cuba(v_th_mant=v_th_mant, i_decay=i_decay, v_decay=v_decay, **init)


def dense_chain(seed: int = 0) -> IntNetwork:
    """6 -> 5 (dense, bias, delays) -> 4 (dense_rec, leaky) -> 3 (dense): every dense feature."""
    rng = np.random.default_rng(seed)
    return IntNetwork(
        layers=(
            Layer(kind="input", shape=(6,)),
            Layer(
                kind="dense",
                shape=(5,),
                name="fc1",
                weight=rng.integers(-60, 120, (5, 6)),
                bias=rng.integers(-5, 10, 5),
                delay=rng.integers(0, 4, (5, 6)),
                neuron=cuba(50, 4096, 0, v_init=rng.integers(0, 50 * 64, 5)),
            ),
            Layer(
                kind="dense_rec",
                shape=(4,),
                name="fc2",
                weight=rng.integers(-100, 200, (4, 5)),
                weight_rec=rng.integers(-256, 100, (4, 4)),
                neuron=cuba(60, 1000, 300, u_init=np.int64(-640)),
            ),
            Layer(
                kind="dense",
                shape=(3,),
                name="fc3",
                weight=rng.integers(-256, 254, (3, 4)),
                bias=np.array([3, -2, 0]),
                neuron=cuba(30, 2048, 2048),
            ),
        ),
        metadata={"encoding": "hand-built"},
    )


def conv_chain(seed: int = 0) -> IntNetwork:
    """2x6x6 -> conv 3x3 stride 1 pad 1 -> conv stride 2 groups -> flatten -> dense."""
    rng = np.random.default_rng(seed)
    return IntNetwork(
        layers=(
            Layer(kind="input", shape=(2, 6, 6)),
            Layer(
                kind="conv",
                shape=(4, 6, 6),
                name="c1",
                weight=rng.integers(-40, 80, (4, 2, 3, 3)),
                bias=rng.integers(-3, 6, 4),
                padding=(1, 1),
                neuron=cuba(60, 4096, 0),
            ),
            Layer(
                kind="conv",
                shape=(4, 3, 3),
                name="c2",
                weight=rng.integers(-30, 90, (4, 2, 2, 3)),
                stride=(2, 2),
                padding=(0, 1),
                groups=2,
                neuron=cuba(40, 2000, 100),
            ),
            Layer(kind="flatten", shape=(36,)),
            Layer(
                kind="dense",
                shape=(5,),
                name="fc",
                weight=rng.integers(-50, 100, (5, 36)),
                neuron=cuba(50, 4096, 0),
            ),
        ),
    )


def random_spikes(
    shape: tuple[int, ...], steps: int, rate: float = 0.4, seed: int = 1
) -> np.ndarray:
    return (np.random.default_rng(seed).random((steps, *shape)) < rate).astype(np.int8)
