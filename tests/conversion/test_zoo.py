"""The model zoo: every model builds, runs on its input shape and converts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snn_encodings import zoo
from snn_encodings.errors import DataError

SLIM = {name: (1.0 if zoo.input_shape(name) == (1, 28, 28) else 0.125) for name in zoo.MODELS}


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_model_maps_its_input_shape_to_logits(name: str) -> None:
    model = zoo.build(name, width=SLIM[name])
    out = model(torch.rand(2, *zoo.input_shape(name)))
    assert out.shape == (2, 10)
    assert not model.training


def test_mobilenet_uses_depthwise_convolutions_relu6_and_residual_additions() -> None:
    model = zoo.build("mobilenetv2", width=0.25)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert any(getattr(m, "residual", False) for m in model.modules())


def test_resnet18_has_eight_blocks_three_with_downsampling_shortcuts() -> None:
    blocks = [m for m in zoo.build("resnet18", width=0.125).modules() if isinstance(m, zoo.BasicBlock)]
    assert len(blocks) == 8
    assert sum(len(block.shortcut) > 0 for block in blocks) == 3


def test_batch_norm_stats_are_the_mean_and_variance_of_the_random_inputs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4, 3).view(4, 3, 1, 1))
    zoo.set_batch_norm_stats(model, (3, 8, 8), batches=2, batch_size=8, seed=3)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.cat([torch.rand((8, 3, 8, 8), generator=generator) for _ in range(2)])
    norm = model[1]
    torch.testing.assert_close(norm.running_mean[:3], inputs.mean((0, 2, 3)))
    assert norm.running_mean[3] == 0
    assert norm.momentum == 0.1 and not model.training


def test_unknown_model_and_bad_width_are_refused() -> None:
    with pytest.raises(DataError, match="unknown model 'resnet50'"):
        zoo.build("resnet50")
    with pytest.raises(DataError, match="width must be > 0"):
        zoo.build("vgg11_bn", width=0)
    with pytest.raises(DataError, match="fixed size"):
        zoo.build("convnet", width=0.5)
