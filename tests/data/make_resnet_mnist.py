"""Regenerate ``resnet_mnist-e3-s0.pt``, the trained BatchNorm ResNet behind the residual tests.

Command (from the repository root; about a minute on 2 CPU cores)::

    .venv/bin/python tests/data/make_resnet_mnist.py

It trains ``snn_encodings.models.train_mnist("resnet_mnist", epochs=3, seed=0)`` on the shipped
8 000-image training split and writes the state dict next to this file (torch 2.13.0, CPU).
"""

from __future__ import annotations

from pathlib import Path

import torch

from snn_encodings.models import train_mnist

if __name__ == "__main__":
    model = train_mnist("resnet_mnist", epochs=3, seed=0, use_cache=False, progress=True)
    torch.save(model.state_dict(), Path(__file__).with_name("resnet_mnist-e3-s0.pt"))
