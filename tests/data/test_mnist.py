from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from snn_encodings.data import load_mnist, mnist_split, read_idx
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
