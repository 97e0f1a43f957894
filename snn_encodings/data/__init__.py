"""MNIST: the shipped test set and its fixed train/eval split, and the standard full set."""

from __future__ import annotations

from snn_encodings.data.mnist import find_full_mnist, load_mnist, mnist_split, read_idx

__all__ = ["find_full_mnist", "load_mnist", "mnist_split", "read_idx"]
