from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from snn_encodings.data import find_full_mnist, load_mnist, mnist_split, read_idx
from snn_encodings.data.mnist import IMAGES_FILE, LABELS_FILE
from snn_encodings.errors import DataError

SHIPPED = Path(__file__).resolve().parents[2] / "snn_encodings" / "data"


def test_shipped_mnist_has_expected_shape_and_range() -> None:
    x, y = load_mnist()
    assert x.shape == (10_000, 1, 28, 28)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert int(y.min()) == 0 and int(y.max()) == 9


def test_split_sizes_follow_index_rule() -> None:
    train, evaluation = mnist_split("train"), mnist_split("eval")
    assert len(train) == 8000 and len(evaluation) == 2000
    _, y = load_mnist()
    assert int(evaluation.tensors[1][1]) == int(y[5])


def test_uncompressed_user_directory_is_accepted(tmp_path: Path) -> None:
    for name in (IMAGES_FILE, LABELS_FILE):
        (tmp_path / name).write_bytes(gzip.decompress((SHIPPED / f"{name}.gz").read_bytes()))
    x, _ = load_mnist(tmp_path)
    assert x.shape[0] == 10_000


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    raw = gzip.decompress((SHIPPED / f"{IMAGES_FILE}.gz").read_bytes())
    (tmp_path / IMAGES_FILE).write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / IMAGES_FILE)


def test_corrupt_gzip_and_bad_magic_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.gz").write_bytes(b"\x1f\x8b" + b"junk" * 10)
    with pytest.raises(DataError, match="gzip"):
        read_idx(tmp_path / "a.gz")
    (tmp_path / "b").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "b")


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found|neither"):
        load_mnist(tmp_path)


def test_missing_files_error_names_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, part="train")
    message = str(info.value)
    assert str(tmp_path) in message
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message


def test_torchvision_raw_layout_is_found(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (IMAGES_FILE, LABELS_FILE):
        (raw / f"{name}.gz").write_bytes((SHIPPED / f"{name}.gz").read_bytes())
    x, y = load_mnist(tmp_path)
    shipped_x, shipped_y = load_mnist()
    assert torch.equal(x, shipped_x) and torch.equal(y, shipped_y)


def test_unknown_parts_and_missing_shipped_training_set_are_errors() -> None:
    with pytest.raises(DataError, match="part must be one of"):
        mnist_split("validation")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="ships only the 10 000 test images"):
        mnist_split("train60k")


def test_standard_split_reads_the_full_set(full_mnist_dir: Path) -> None:
    train = mnist_split("train60k", full_mnist_dir, limit=500)
    test = mnist_split("test10k", full_mnist_dir)
    assert len(train) == 500 and len(test) == 10_000
    x, y = load_mnist(full_mnist_dir, part="train")
    assert x.shape == (60_000, 1, 28, 28) and torch.bincount(y).min() > 5000
    assert torch.equal(test.tensors[0], load_mnist()[0])


def test_full_set_is_found_above_a_checkout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SNN_ENCODINGS_MNIST", raising=False)
    folder = tmp_path / "shared" / "data" / "mnist" / "MNIST" / "raw"
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte").write_bytes(b"")
    checkout = tmp_path / "work" / "repo"
    checkout.mkdir(parents=True)
    assert find_full_mnist(checkout) == tmp_path / "shared" / "data" / "mnist"
    assert find_full_mnist(tmp_path / "work") is not None
    assert find_full_mnist(tmp_path.parent / "elsewhere") is None
    override = tmp_path / "mine"
    override.mkdir()
    (override / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv("SNN_ENCODINGS_MNIST", str(override))
    assert find_full_mnist(checkout) == override
