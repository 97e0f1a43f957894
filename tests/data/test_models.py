"""Reference networks: LeNet-5's size, and training on a given dataset with its own cache entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from snn_encodings.errors import DataError
from snn_encodings.models import _shifted, build, train_mnist


def test_lenet5_has_the_quartz_papers_size() -> None:
    model = build("lenet5")
    assert sum(p.numel() for p in model.parameters()) == 26_338
    relus = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: relus.append(out[0].numel()))
        for m in model.modules()
        if isinstance(m, torch.nn.ReLU)
    ]
    model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    assert sum(relus) + 10 == 4_354  # neurons: ReLU outputs and the output layer


def test_training_on_given_data_is_cached_under_its_own_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SNN_ENCODINGS_CACHE", str(tmp_path))
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(32, 1, 28, 28, generator=generator), torch.arange(32) % 10)
    first = train_mnist("mlp", epochs=1, data=data, shift=1, progress=False)
    again = train_mnist("mlp", epochs=1, data=data, shift=1, progress=False)
    smaller = TensorDataset(*(t[:16] for t in data.tensors))
    train_mnist("mlp", epochs=1, data=smaller, shift=1, progress=False)
    assert len(list(tmp_path.glob("mlp-*shift1*.pt"))) == 2
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(DataError, match="shift must be an integer >= 0"):
        train_mnist("mlp", epochs=1, data=data, shift=-1, progress=False)


def test_shift_moves_each_image_by_its_own_offset_within_bounds() -> None:
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    moved = _shifted(x, 2, torch.Generator().manual_seed(0))
    rows, cols = (moved[:, 0] == 1).nonzero()[:, 1:].T
    assert moved.sum() == 64 and len(rows) == 64
    assert rows.min() >= 12 and rows.max() <= 16 and cols.min() >= 12 and cols.max() <= 16
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5
