"""Small seeded models and data shared by the hostile-input tests (fast on CPU)."""

from __future__ import annotations

import torch
from torch import nn

INPUT = (1, 4, 4)
CLASSES = 5


def tiny_ann(seed: int = 0, output_bias: float = 0.0) -> nn.Module:
    """A 16-32-5 MLP with random weights; ``output_bias`` is added to every logit."""
    torch.manual_seed(seed)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    with torch.no_grad():
        ann[3].bias.add_(output_bias)
    return ann.eval()


def images(count: int, seed: int = 1) -> torch.Tensor:
    """``(count, 1, 4, 4)`` uniform values in [0, 1)."""
    return torch.rand((count, *INPUT), generator=torch.Generator().manual_seed(seed))


def labels(count: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, CLASSES, (count,), generator=torch.Generator().manual_seed(seed))
