"""The MNIST test set shipped with the package, its fixed split, and an IDX reader."""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

from snn_encodings.errors import DataError

__all__ = ["load_mnist", "mnist_split", "read_idx"]

IMAGES_FILE = "t10k-images-idx3-ubyte"
LABELS_FILE = "t10k-labels-idx1-ubyte"
_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Raises:
        DataError: if the file is missing, has a bad magic number, or is truncated.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"read_idx: no such file {str(path)!r}") from None
    except (OSError, EOFError) as error:
        raise DataError(f"read_idx: {str(path)!r} is not a readable (gzip) file: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"read_idx: {str(path)!r} is not an IDX file (bad magic number)")
    dtype = np.dtype(_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"read_idx: {str(path)!r} is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"read_idx: {str(path)!r} holds {len(raw)} bytes, its header promises {expected}: "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).exists():
            return directory / name
    raise DataError(f"load_mnist: neither {stem}.gz nor {stem} found in {str(directory)!r}")


def load_mnist(data_dir: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the MNIST test set: images ``(N, 1, 28, 28)`` float32 in [0, 1] and labels ``(N,)``.

    Args:
        data_dir: folder holding ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``;
            ``None`` uses the copy shipped with the package.
    Raises:
        DataError: for missing, corrupt or inconsistent files.
    """
    if data_dir is None:
        directory = Path(str(resources.files("snn_encodings.data")))
    else:
        directory = Path(data_dir)
    images = read_idx(_find(directory, IMAGES_FILE))
    labels = read_idx(_find(directory, LABELS_FILE))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"load_mnist: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"load_mnist: {len(labels)} labels for {len(images)} images")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"load_mnist: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def mnist_split(
    part: Literal["train", "eval"],
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> TensorDataset:
    """The fixed split of the 10 000 test images: ``i % 5 != 0`` train (8 000), else eval (2 000).

    Args:
        part: ``"train"`` (training/calibration) or ``"eval"`` (evaluation).
        data_dir: as for :func:`load_mnist`.
        limit: keep only the first ``limit`` images of the part.
    Returns:
        A ``TensorDataset`` of ``(image (1, 28, 28), label)``.
    """
    if part not in ("train", "eval"):
        raise DataError(f"mnist_split: part must be 'train' or 'eval', got {part!r}")
    x, y = load_mnist(data_dir)
    index = torch.arange(len(x))
    mask = index % 5 == 0 if part == "eval" else index % 5 != 0
    x, y = x[mask], y[mask]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return TensorDataset(x, y)
