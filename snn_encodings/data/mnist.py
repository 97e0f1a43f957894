"""MNIST: the shipped test set, its fixed split, the standard 60 000/10 000 sets, an IDX reader."""

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

__all__ = ["find_full_mnist", "load_mnist", "mnist_split", "read_idx"]

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


FILES = {
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
}
"""The standard IDX file stems of each MNIST set (each may also end in ``.gz``)."""

SPLIT_PARTS = ("train", "eval", "train60k", "test10k")
"""Parts of :func:`mnist_split`: the fixed 8 000/2 000 split of the test set, or the standard sets."""


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _locate(directory: Path, stems: tuple[str, ...]) -> list[Path]:
    """The files ``stems`` in ``directory`` or in torchvision's ``MNIST/raw`` (or ``raw``) below it."""
    for folder in (directory, directory / "MNIST" / "raw", directory / "raw"):
        found = [_find(folder, stem) for stem in stems]
        if all(path is not None for path in found):
            return found  # type: ignore[return-value]
    expected = ", ".join(f"{stem}[.gz]" for stem in stems)
    raise DataError(
        f"load_mnist: {expected} not found in {str(directory)!r} (nor in its MNIST/raw or raw "
        "folder); point data_dir at a folder holding the standard MNIST IDX files, for example "
        "torchvision.datasets.MNIST(root, download=True)'s root"
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None, part: Literal["test", "train"] = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST set: images ``(N, 1, 28, 28)`` float32 in [0, 1] and labels ``(N,)`` int64.

    Args:
        data_dir: folder holding the standard IDX files, raw or gzip-compressed, directly or in
            torchvision's ``MNIST/raw`` layout below it; ``None`` uses the test set shipped with
            the package (there is no shipped training set).
        part: ``"test"`` (the 10 000 ``t10k-*`` images) or ``"train"`` (the 60 000 ``train-*``).
    Raises:
        DataError: for an unknown part, missing, corrupt or inconsistent files.
    """
    if part not in FILES:
        raise DataError(f"load_mnist: part must be 'test' or 'train', got {part!r}")
    if data_dir is None:
        if part == "train":
            raise DataError(
                "load_mnist: the package ships only the 10 000 test images; pass data_dir, a "
                "folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
            )
        directory = Path(str(resources.files("snn_encodings.data")))
    else:
        directory = Path(data_dir)
    if not directory.is_dir():
        raise DataError(f"load_mnist: data_dir {str(directory)!r} is not a directory")
    images_path, labels_path = _locate(directory, FILES[part])
    return _tensors(read_idx(images_path), read_idx(labels_path), images_path)


def _tensors(
    images: np.ndarray, labels: np.ndarray, where: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"load_mnist: images in {str(where)!r} must be uint8 (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if len(images) == 0:
        raise DataError(f"load_mnist: {str(where)!r} holds no images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"load_mnist: {len(labels)} labels for {len(images)} images in {str(where.parent)!r}"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"load_mnist: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def mnist_split(
    part: Literal["train", "eval", "train60k", "test10k"],
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> TensorDataset:
    """A named part of MNIST as a dataset of ``(image (1, 28, 28), label)``.

    Parts:
        ``"train"`` / ``"eval"``: the fixed split of the 10 000 test images, ``i % 5 != 0``
        (8 000, for training and calibration) and ``i % 5 == 0`` (2 000, for evaluation); works
        with the shipped copy, no download needed.
        ``"train60k"`` / ``"test10k"``: the standard split (60 000 training, 10 000 test
        images); ``"train60k"`` needs ``data_dir``.

    Args:
        part: one of the parts above.
        data_dir: as for :func:`load_mnist`.
        limit: keep only the first ``limit`` images (an integer >= 1) of the part.
    Raises:
        DataError: for an unknown part, a bad ``limit`` or unreadable files.
    """
    if part not in SPLIT_PARTS:
        raise DataError(f"mnist_split: part must be one of {SPLIT_PARTS}, got {part!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"mnist_split: limit must be an integer >= 1 or None, got {limit!r}")
    x, y = load_mnist(data_dir, "train" if part == "train60k" else "test")
    if part in ("train", "eval"):
        index = torch.arange(len(x))
        mask = index % 5 == 0 if part == "eval" else index % 5 != 0
        x, y = x[mask], y[mask]
    if len(x) == 0:
        raise DataError(f"mnist_split: the {part!r} part of {data_dir!r} holds no images")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return TensorDataset(x, y)


def find_full_mnist(near: str | os.PathLike[str]) -> Path | None:
    """The folder of the full MNIST set (60 000 training images) for benchmarks and tests.

    Looks at ``$SNN_ENCODINGS_MNIST`` first, then at ``shared/data/mnist`` beside ``near`` or
    beside any folder above it (a project checkout keeps it at ``../shared/data/mnist``).

    Returns:
        The folder, or ``None`` if none holds ``train-images-idx3-ubyte[.gz]``.
    """
    stem = FILES["train"][0]
    override = os.environ.get("SNN_ENCODINGS_MNIST")
    candidates = [Path(override)] if override else []
    start = Path(near).resolve()
    candidates += [folder / "shared" / "data" / "mnist" for folder in (start, *start.parents)]
    for folder in candidates:
        for where in (folder, folder / "MNIST" / "raw", folder / "raw"):
            if _find(where, stem) is not None:
                return folder
    return None
