"""Regenerate ``convnet-e8-s0.pt``, the trained convnet behind the ``trained_ann`` fixture.

Command (from the repository root; takes about 5 minutes on 2 CPU cores)::

    .venv/bin/python tests/data/make_convnet.py

It trains ``snn_encodings.models.train_mnist("convnet", epochs=8, seed=0)`` on the shipped
8 000-image training split and writes the state dict next to this file. The committed file was
made with torch 2.13.0 on CPU; another torch or CPU may give a slightly different network, which
the tests accept as long as the committed file is the one they load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from snn_encodings.models import train_mnist

if __name__ == "__main__":
    model = train_mnist("convnet", epochs=8, seed=0, use_cache=False, progress=True)
    torch.save(model.state_dict(), Path(__file__).with_name("convnet-e8-s0.pt"))
