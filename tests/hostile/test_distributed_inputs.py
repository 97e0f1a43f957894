"""torch.distributed set-up without the other processes. (Processes whose models differ in
weights are refused at convert time: ``tests/test_distributed.py``, which runs two processes.)"""

from __future__ import annotations

import socket

import pytest
import torch.distributed as dist

from snn_encodings.distributed import init_from_env
from snn_encodings.errors import ConversionError


def test_init_from_env_without_peers_times_out_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConversionError, match="could not form the process group within 2 s"):
        init_from_env("gloo", timeout=2)
    assert not dist.is_initialized()
