"""convert() on networks written the usual PyTorch way: functional ops, view/reshape, +=."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snn_encodings import ICRate, convert
from snn_encodings.conversion.graph import trace
from snn_encodings.errors import ConversionError

FLATTENS = {
    "view_size": lambda x: x.view(x.size(0), -1),
    "view_minus_one": lambda x: x.view(-1, 16 * 4 * 4),
    "reshape_shape": lambda x: x.reshape(x.shape[0], -1),
    "view_size_tuple": lambda x: x.view(x.size()[0], -1),
    "flatten_method": lambda x: x.flatten(1),
    "torch_flatten": lambda x: torch.flatten(x, 1),
    "torch_reshape": lambda x: torch.reshape(x, (x.shape[0], -1)),
}


class LeNet5(nn.Module):
    """LeNet-5 as tutorials write it: functional ReLU and pooling in ``forward``."""

    def __init__(self, flatten: str, pool: str = "max") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)
        self.flatten = FLATTENS[flatten]
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        if self.pool == "max":
            x = torch.max_pool2d(F.relu6(self.conv2(x)), kernel_size=2)
        else:
            x = F.avg_pool2d(torch.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(self.flatten(x)), inplace=True)
        return self.fc2(x)


class Residual(nn.Module):
    """A residual block with ``+=`` and in-place ReLUs, then global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.stem(x))
        out = self.body(h)
        out += h
        out = out.relu_()
        out = F.adaptive_avg_pool2d(out, 1)
        return self.head(out.view(out.size(0), -1))


def _as_sequential(ann: LeNet5) -> nn.Sequential:
    """The same weights written with modules only: the reference the functional form must match."""
    pool2 = nn.MaxPool2d(2) if ann.pool == "max" else nn.AvgPool2d(2)
    relu2 = nn.ReLU6() if ann.pool == "max" else nn.ReLU()
    return nn.Sequential(
        ann.conv1, nn.ReLU(), nn.MaxPool2d(2), ann.conv2, relu2, pool2, nn.Flatten(),
        ann.fc1, nn.ReLU(), ann.fc2,
    ).eval()


def _same_network(ann: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
    spec = ICRate(steps=16)
    got, want = convert(ann, spec, [x]), convert(reference, spec, [x])
    with torch.no_grad():
        assert torch.equal(got(x), want(x))
        assert torch.equal(got.twin(x), want.twin(x))


@pytest.mark.parametrize("flatten", sorted(FLATTENS))
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_convert_accepts_functional_lenet(flatten: str, pool: str) -> None:
    torch.manual_seed(0)
    ann = LeNet5(flatten, pool).eval()
    x = torch.rand(6, 1, 28, 28)
    kinds = [node.kind for node in trace(ann, x[:2])]
    pools = ["pool"] if pool == "max" else []
    assert kinds == ["input", "neuron", "pool", "neuron", *pools, "neuron", "output"]
    _same_network(ann, _as_sequential(ann), x)


def test_convert_accepts_residual_iadd_and_inplace_relu() -> None:
    torch.manual_seed(0)
    ann = Residual().eval()
    x = torch.rand(4, 1, 8, 8)
    kinds = [node.kind for node in trace(ann, x[:2])]
    assert kinds == ["input", "neuron", "neuron", "output"]
    snn = convert(ann, ICRate(steps=16), [x])
    with torch.no_grad():
        assert snn(x).shape == (4, 10)
        torch.testing.assert_close(snn.twin(x), ann(x), rtol=0.2, atol=0.1)


class _Gelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.gelu(self.fc(x)))


class _SigmoidMethod(_Gelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x).sigmoid())


class _Reshape3d(_Gelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.fc(x)).view(x.size(0), 2, 2).sum(1).repeat(1, 2))


@pytest.mark.parametrize(
    "model, written, listing",
    [
        (_Gelu(), "F.gelu", "supported functions: F.relu, F.relu6"),
        (_SigmoidMethod(), "x.sigmoid()", "supported tensor methods: x.relu()"),
        (_Reshape3d(), "view to shape (2, 2) per sample", "x.view(x.size(0), -1)"),
    ],
)
def test_unsupported_op_message_uses_the_form_written(model, written, listing) -> None:
    with pytest.raises(ConversionError) as error:
        trace(model, torch.rand(2, 4))
    assert written in str(error.value) and listing in str(error.value)
