"""Shared fixtures: spec examples, seeded current factories, extras handling."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from snn_encodings.specs import ICRate, Quartz, Radix, Spec

# Hypothesis profiles (docs/testing.md). "ci" is derandomized and ignores the example database,
# so one commit gives one result; "explore" draws many fresh random examples (nightly runs).
# HYPOTHESIS_PROFILE picks one explicitly; otherwise CI=<anything> selects "ci", else "dev".
# The too_slow health check times data generation, so on a loaded runner it could fail one run
# and pass the next: "ci" leaves it off.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("explore", max_examples=5000, deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

SPEC_EXAMPLES: tuple[Spec, ...] = (
    ICRate(steps=8, init="ann"),
    ICRate(steps=6, init="zero", compensate=False),
    ICRate(steps=8, signed=True),
    Radix(steps=4),
    Radix(steps=3, base=3, mode="paper"),
    Quartz(t_max=4),
    Quartz(t_max=3, rounding="floor", mode="paper", analytic=True),
)
"""One or more examples per spec class; a test checks every class in ALL_SPECS has one."""

_EXTRA_MODULES = {
    "snntorch": "snntorch",
    "norse": "norse.torch",
    "spikingjelly": "spikingjelly.activation_based.neuron",
    "cupy": "cupy",
    "h5py": "h5py",
    "nir": "nir",
    "matplotlib": "matplotlib",
}


def require(extra: str) -> None:
    """Skip the test when ``extra`` is not installed, or fail under SNN_ENCODINGS_REQUIRE_EXTRAS=1."""
    try:
        importlib.import_module(_EXTRA_MODULES.get(extra, extra))
    except ImportError as error:
        if os.environ.get("SNN_ENCODINGS_REQUIRE_EXTRAS") == "1":
            pytest.fail(f"extra {extra!r} is required here but failed to import: {error}")
        pytest.skip(f"extra {extra!r} is not installed")


@pytest.fixture(params=SPEC_EXAMPLES, ids=repr)
def spec(request: pytest.FixtureRequest) -> Spec:
    return request.param


@pytest.fixture
def make_currents() -> Callable[..., torch.Tensor]:
    """Seeded factory: ``make_currents(shape, steps, dtype=float32, seed=0)`` -> ``(T, *shape)``."""

    def make(
        shape: tuple[int, ...], steps: int, dtype: torch.dtype = torch.float32, seed: int = 0
    ) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return (
            torch.rand((steps, *shape), generator=generator, dtype=torch.float64) * 1.2 - 0.2
        ).to(dtype)

    return make


TRAINED_CONVNET = Path(__file__).parent / "data" / "convnet-e8-s0.pt"
"""The demo convnet's weights, made by ``tests/data/make_convnet.py`` (committed so that a fresh
clone does not spend minutes training it)."""


@pytest.fixture(scope="session")
def _cache_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.environ.get("SNN_ENCODINGS_CACHE") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def mnist_cache(_cache_root: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Weights cache shared by the session (``SNN_ENCODINGS_CACHE`` if set, else a temp dir).

    The variable is set for the requesting test only and restored after it, so test outcomes do
    not depend on which tests ran before.
    """
    monkeypatch.setenv("SNN_ENCODINGS_CACHE", _cache_root)
    return _cache_root


@pytest.fixture(scope="session")
def trained_ann() -> torch.nn.Module:
    """The demo's convnet trained on the shipped training split (read-only: never modify)."""
    from snn_encodings.models import build

    model = build("convnet")
    model.load_state_dict(torch.load(TRAINED_CONVNET, map_location="cpu", weights_only=True))
    return model.eval()


TRAINED_RESNET_MNIST = Path(__file__).parent / "data" / "resnet_mnist-e3-s0.pt"
"""The small BatchNorm ResNet's weights (``tests/data/make_resnet_mnist.py``)."""


@pytest.fixture(scope="session")
def trained_resnet() -> torch.nn.Module:
    """``zoo.build("resnet_mnist")`` trained on the shipped training split (read-only)."""
    from snn_encodings.models import build

    model = build("resnet_mnist")
    model.load_state_dict(torch.load(TRAINED_RESNET_MNIST, map_location="cpu", weights_only=True))
    return model.eval()


@pytest.fixture(scope="session")
def mnist_eval() -> torch.utils.data.TensorDataset:
    """The 2 000-image evaluation split."""
    from snn_encodings.data import mnist_split

    return mnist_split("eval")


@pytest.fixture(scope="session")
def mnist_calibration() -> torch.utils.data.TensorDataset:
    """1 000 images of the training split, for calibration."""
    from snn_encodings.data import mnist_split

    return mnist_split("train", limit=1000)



@pytest.fixture(scope="session")
def full_mnist_dir() -> Path:
    """The full-MNIST folder (``../shared/data/mnist``); tests needing it skip, saying so, if absent."""
    from snn_encodings.data import find_full_mnist

    found = find_full_mnist(Path(__file__).parent)
    if found is None:
        pytest.skip("full MNIST (60 000 training images) not found in ../shared/data/mnist")
    return found
