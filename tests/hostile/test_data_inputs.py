"""MNIST loading: limits that would act as Python slices, and empty sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from snn_encodings.data import load_mnist, mnist_split
from snn_encodings.data.mnist import IMAGES_FILE, LABELS_FILE
from snn_encodings.errors import DataError


@pytest.mark.parametrize("limit", [-5, -1, 0, 2.5, True])
def test_bad_limit_is_a_clear_error(limit: object) -> None:
    with pytest.raises(DataError, match="limit must be an integer >= 1"):
        mnist_split("eval", limit=limit)  # type: ignore[arg-type]


def test_empty_idx_set_is_rejected(tmp_path: Path) -> None:
    header = (0x0803).to_bytes(4, "big") + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / IMAGES_FILE).write_bytes(header)
    (tmp_path / LABELS_FILE).write_bytes((0x0801).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    with pytest.raises(DataError, match="no images"):
        load_mnist(tmp_path)
