"""Standard deep networks written in the project, shared by tests and benchmarks.

CIFAR-style ResNet-18, VGG-11-BN, VGG-16 (with or without BatchNorm), a small
MobileNetV2-style network, the demo MNIST convnet, the Quartz paper's LeNet-5 (26k
parameters) and a small BatchNorm ResNet for MNIST (``resnet_mnist``), all built from the layers
:func:`snn_encodings.convert` accepts. ``width`` scales every channel count, so tests can use
slim versions; :func:`set_batch_norm_stats` gives a randomly initialised network the BatchNorm
running statistics of random inputs, so that conversion folds realistic BatchNorms.

Example:
    >>> model = set_batch_norm_stats(build("resnet18", width=0.125), input_shape("resnet18"))
    >>> model(torch.rand(2, *input_shape("resnet18"))).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from snn_encodings.errors import DataError
from snn_encodings.models import build as build_mnist

__all__ = ["MODELS", "build", "input_shape", "set_batch_norm_stats"]

#: Input shapes ``(C, H, W)`` of the zoo's models.
_CIFAR = (3, 32, 32)
_MNIST = (1, 28, 28)


def _channels(count: int, width: float) -> int:
    return max(1, round(count * width))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers, a 1x1 conv-BN shortcut where the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016): 3x3 stem, four stages of basic blocks, average-pool head."""

    def __init__(self, blocks: Sequence[int], width: float = 1.0, classes: int = 10) -> None:
        super().__init__()
        widths = [_channels(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        inputs = widths[0]
        for stage, (outputs, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(inputs, outputs, stride))
                inputs = outputs
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


_VGG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ],
}


def _vgg(layout: str, batch_norm: bool, width: float = 1.0, classes: int = 10) -> nn.Module:
    """VGG (Simonyan and Zisserman 2015) for 32x32 inputs: 3x3 convs, 2x2 max-pooling, linear head."""
    layers: list[nn.Module] = []
    inputs = 3
    for item in _VGG[layout]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        outputs = _channels(int(item), width)
        layers.append(nn.Conv2d(inputs, outputs, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(outputs))
        layers.append(nn.ReLU())
        inputs = outputs
    layers += [nn.Flatten(), nn.Linear(inputs, classes)]
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), depthwise 3x3 (ReLU6), linear 1x1 projection,
    residual addition where the shape is kept."""

    def __init__(self, inputs: int, outputs: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inputs * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inputs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, outputs, 1, bias=False),
            nn.BatchNorm2d(outputs),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """A small MobileNetV2-style network (Sandler et al. 2018) for 32x32 inputs.

    Stages ``(expand, channels, blocks, stride)``: (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2),
    (6, 64, 2, 2), then a 1x1 conv to 256 channels (ReLU6), average pooling and a linear head.
    """

    _STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2))

    def __init__(self, width: float = 1.0, classes: int = 10) -> None:
        super().__init__()
        inputs = _channels(32, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, inputs, 3, 1, 1, bias=False),
            nn.BatchNorm2d(inputs),
            nn.ReLU6(),
        ]
        for expand, channels, count, stride in self._STAGES:
            outputs = _channels(channels, width)
            for index in range(count):
                layers.append(
                    InvertedResidual(inputs, outputs, stride if index == 0 else 1, expand)
                )
                inputs = outputs
        head = _channels(256, width)
        layers += [nn.Conv2d(inputs, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(head, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def _mnist_model(name: str) -> Callable[..., nn.Module]:
    """A fixed-size MNIST network of :mod:`snn_encodings.models` as a zoo builder."""

    def make(width: float = 1.0, classes: int = 10) -> nn.Module:
        if width != 1.0 or classes != 10:
            raise DataError(f"zoo: {name} has a fixed size (width=1.0, classes=10)")
        return build_mnist(name)

    return make


MODELS: dict[str, tuple[Callable[..., nn.Module], tuple[int, ...]]] = {
    "resnet18": (lambda width=1.0, classes=10: ResNet((2, 2, 2, 2), width, classes), _CIFAR),
    "vgg11_bn": (lambda width=1.0, classes=10: _vgg("vgg11", True, width, classes), _CIFAR),
    "vgg16": (lambda width=1.0, classes=10: _vgg("vgg16", False, width, classes), _CIFAR),
    "vgg16_bn": (lambda width=1.0, classes=10: _vgg("vgg16", True, width, classes), _CIFAR),
    "mobilenetv2": (MobileNetV2, _CIFAR),
    "convnet": (_mnist_model("convnet"), _MNIST),
    "lenet5": (_mnist_model("lenet5"), _MNIST),
    "resnet_mnist": (_mnist_model("resnet_mnist"), _MNIST),
}
"""Zoo names -> (builder taking ``width`` and ``classes``, input shape ``(C, H, W)``)."""


def _entry(name: str) -> tuple[Callable[..., nn.Module], tuple[int, ...]]:
    try:
        return MODELS[name]
    except KeyError:
        raise DataError(f"zoo: unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def build(name: str, *, width: float = 1.0, classes: int = 10) -> nn.Module:
    """A freshly initialised zoo model in eval mode.

    Args:
        name: one of :data:`MODELS` (``resnet18``, ``vgg11_bn``, ``vgg16``, ``vgg16_bn``,
            ``mobilenetv2``, ``convnet``, ``lenet5``, ``resnet_mnist``).
        width: multiplies every channel count (at least one channel each); the MNIST models
            (``convnet``, ``lenet5``, ``resnet_mnist``) only accept 1.
        classes: outputs of the linear head.
    Raises:
        DataError: for an unknown name or a size the model does not offer.
    """
    if not width > 0:
        raise DataError(f"zoo: width must be > 0, got {width!r}")
    builder, _ = _entry(name)
    return builder(width=width, classes=classes).eval()


def input_shape(name: str) -> tuple[int, ...]:
    """The input shape ``(C, H, W)`` the zoo model ``name`` takes."""
    return _entry(name)[1]


def set_batch_norm_stats(
    model: nn.Module,
    shape: Sequence[int],
    *,
    batches: int = 2,
    batch_size: int = 16,
    seed: int = 0,
) -> nn.Module:
    """Set every BatchNorm's running statistics from random inputs, in place; return ``model``.

    Runs ``batches`` batches of uniform ``[0, 1)`` inputs ``(batch_size, *shape)`` in training
    mode with a cumulative average (momentum ``None``), then restores each BatchNorm's momentum
    and puts the model in eval mode. The affine parameters are left as they are. Seeded by
    ``seed`` without touching the global random state.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    generator = torch.Generator().manual_seed(seed)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand((batch_size, *shape), generator=generator))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.eval()
