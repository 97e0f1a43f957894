"""Shipped data: the MNIST test set and its fixed train/eval split."""

from __future__ import annotations

from snn_encodings.data.mnist import load_mnist, mnist_split, read_idx

__all__ = ["load_mnist", "mnist_split", "read_idx"]
