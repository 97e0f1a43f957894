"""Small reference networks for the shipped MNIST data, and their seeded, cached training."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
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


def _lenet5() -> nn.Module:
    """LeNet-5 of the Quartz paper's MNIST row (26 338 parameters, 4 354 ReLU neurons).

    conv 6@5x5, max-pool 2, conv 12@5x5, max-pool 2, conv 120@4x4, linear 10 (Lenz et al., 2023,
    Table 1: 26k parameters, 4.4k neurons).
    """
    return nn.Sequential(
        nn.Conv2d(1, 6, 5),  # 28 -> 24
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 12
        nn.Conv2d(6, 12, 5),  # -> 8
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 4
        nn.Conv2d(12, 120, 4),  # -> 1
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(120, 10),
    )


class _ResidualBlock(nn.Module):
    """A BasicBlock written the usual way: in-place ReLU, ``out += shortcut(x)``."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                nn.BatchNorm2d(channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.relu(out)


class _ResNetMNIST(nn.Module):
    """A small BatchNorm ResNet for MNIST (19 810 parameters): a 3x3 stem of 8 channels, three
    BasicBlocks of 8, 16 (stride 2) and 32 (stride 2) channels with 1x1 downsampling
    shortcuts, global average pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        )
        self.layers = nn.Sequential(
            _ResidualBlock(8, 8, 1), _ResidualBlock(8, 16, 2), _ResidualBlock(16, 32, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


ARCHITECTURES = {
    "convnet": _convnet,
    "lenet": _lenet,
    "lenet5": _lenet5,
    "mlp": _mlp,
    "resnet_mnist": _ResNetMNIST,
}
"""Architecture names accepted by :func:`build`, the CLI and saved state_dicts."""


def build(architecture: str) -> nn.Module:
    """A freshly initialised network of a named architecture (see :data:`ARCHITECTURES`)."""
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
    data: TensorDataset | None = None,
    shift: int = 0,
    use_cache: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Train ``architecture`` on MNIST with Adam and a cosine learning-rate decay, seeded.

    Args:
        architecture: a name of :data:`ARCHITECTURES`.
        epochs: passes over the training images.
        seed: seeds initialisation and shuffling.
        data_dir: folder of the MNIST IDX files for the default training data.
        data: the training images ``(N, 1, 28, 28)`` and labels, e.g.
            ``mnist_split("train60k", folder)``; by default the fixed 8 000-image training split
            of the test set (:func:`~snn_encodings.data.mnist_split`).
        shift: augmentation: each training image is moved by up to ``shift`` pixels in each
            direction (uniform, zero-filled); 0 trains on the images as they are.
    Returns:
        The trained network in eval mode. The weights are cached (keyed by architecture, epochs,
        seed and the data) so later calls load them; the cache file is written atomically.
    """
    train = mnist_split("train", data_dir) if data is None else data
    if len(train) == 0:
        raise DataError("train_mnist: the training data holds no images")
    digest = hashlib.sha256(train.tensors[0][:64].numpy().tobytes())
    if data is not None:
        digest.update(f"n={len(train)}".encode())
    key = f"{architecture}-e{epochs}-s{seed}-{digest.hexdigest()[:12]}" + (
        f"-shift{shift}" if shift else ""
    )
    path = cache_dir() / f"{key}-{torch.__version__.split('+')[0]}.pt"
    model = build(architecture)
    if use_cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError, ValueError):
            pass  # a stale or corrupt cache entry is retrained and overwritten below
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise DataError(f"train_mnist: shift must be an integer >= 0, got {shift!r}")
    _fit(model, train, (epochs, seed, shift), progress, architecture)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            torch.save(model.state_dict(), handle)
        os.replace(handle.name, path)
    return model


def _shifted(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` ``(B, C, H, W)`` moved by its own random offset in ``[-shift, shift]``."""
    batch, _, height, width = x.shape
    padded = nn.functional.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (2, batch), generator=generator)
    rows = (offsets[0].view(batch, 1) + torch.arange(height)).view(batch, 1, height, 1)
    cols = (offsets[1].view(batch, 1) + torch.arange(width)).view(batch, 1, 1, width)
    samples = torch.arange(batch).view(batch, 1, 1, 1)
    channels = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    return padded[samples, channels, rows, cols]


def _fit(
    model: nn.Module,
    train: TensorDataset,
    schedule_options: tuple[int, int, int],
    progress: bool,
    name: str,
) -> None:
    epochs, seed, shift = schedule_options
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * len(loader))
    model.train()
    for _ in tqdm(range(epochs), desc=f"train {name}", disable=not progress, leave=False):
        for x, y in loader:
            if shift:
                x = _shifted(x, shift, generator)
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()
            schedule.step()
    model.eval()
