from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from snn_encodings import Radix, convert
from snn_encodings.data import mnist_split


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 49, 10),
    ).eval()


@pytest.mark.parametrize(
    "spec",
    [Radix(steps=4), Radix(steps=2, base=4), Radix(steps=3, base=3), Radix(steps=4, mode="paper")],
    ids=repr,
)
def test_radix_convert_matches_twin_on_mnist(spec: Radix) -> None:
    ann = _small_cnn()
    images = mnist_split("eval", limit=16).tensors[0]
    calibration = DataLoader(mnist_split("train", limit=64), batch_size=32)
    snn = convert(ann, spec, calibration)
    with torch.no_grad():
        assert torch.equal(snn(images), snn.twin(images))
