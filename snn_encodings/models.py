"""Small reference networks for the shipped MNIST data, and their seeded, cached training."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from snn_encodings.data.mnist import mnist_split
from snn_encodings.errors import DataError

__all__ = ["ARCHITECTURES", "build", "cache_dir", "train_mnist"]


def _convnet() -> nn.Module:
    """Strided CNN (no pooling): every layer maps onto netx (Loihi) directly."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2),  # 28 -> 12
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2),  # 12 -> 5
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(32 * 5 * 5, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _lenet() -> nn.Module:
    """LeNet-style CNN with max-pooling (as in the Quartz paper's MNIST network, smaller)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5),  # 28 -> 24
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 12
        nn.Conv2d(8, 16, 5),  # -> 8
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 4
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


ARCHITECTURES = {"convnet": _convnet, "lenet": _lenet, "mlp": _mlp}
"""Architecture names accepted by :func:`build`, the CLI and saved state_dicts."""


def build(architecture: str) -> nn.Module:
    """A freshly initialised network of a named architecture (``convnet``, ``lenet``, ``mlp``)."""
    try:
        return ARCHITECTURES[architecture]()
    except KeyError:
        raise DataError(
            f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None


def cache_dir() -> Path:
    """Where trained weights are cached: ``$SNN_ENCODINGS_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    root = os.environ.get("SNN_ENCODINGS_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snn-encodings"


def train_mnist(
    architecture: str = "convnet",
    *,
    epochs: int = 4,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Train ``architecture`` on the shipped MNIST training split (8 000 images), seeded.

    The weights are cached (keyed by architecture, epochs, seed and data) so later calls load
    them; the cache file is written atomically.

    Returns:
        The trained network in eval mode.
    """
    train = mnist_split("train", data_dir)
    digest = hashlib.sha256(train.tensors[0][:64].numpy().tobytes()).hexdigest()[:12]
    path = (
        cache_dir()
        / f"{architecture}-e{epochs}-s{seed}-{digest}-{torch.__version__.split('+')[0]}.pt"
    )
    model = build(architecture)
    if use_cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError, ValueError):
            pass  # a stale or corrupt cache entry is retrained and overwritten below
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * len(loader))
    model.train()
    for _ in tqdm(range(epochs), desc=f"train {architecture}", disable=not progress, leave=False):
        for x, y in loader:
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()
            schedule.step()
    model.eval()
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            torch.save(model.state_dict(), handle)
        os.replace(handle.name, path)
    return model
