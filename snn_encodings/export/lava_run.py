"""Run a netx file in Lava's fixed-point CPU simulator (used inside the Lava venv only).

This module imports Lava, which the package does not depend on: it runs in the separate venv that
``.ci/lava_env.sh`` builds. ``python -m snn_encodings.export.lava_run IN.npz OUT.npz`` reads the
network path (``path``) and full input spikes (``inputs``, ``(steps, *shape)``; with
``batch=True``, ``(B, steps, *shape)``, one Lava run per sample) from ``IN.npz`` and writes Lava's
output spikes and final states to ``OUT.npz`` (stacked over the batch); the tests call it in a
subprocess.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import numpy as np

__all__ = ["import_netx", "run_netx"]


def import_netx() -> Any:
    """Import ``lava.lib.dl.netx`` without running ``lava.lib.dl.slayer.__init__``.

    slayer's package init imports opencv and torchvision, which netx does not need (it only uses
    ``slayer.neuron.rf``). A bare module whose ``__path__`` points at the real slayer folder
    stands in for the package, so its submodules import normally.
    """
    if "lava.lib.dl.slayer" not in sys.modules:
        from lava.lib import dl  # type: ignore[import-not-found]

        for root in dl.__path__:
            folder = os.path.join(root, "slayer")
            if os.path.isdir(folder):
                stub = types.ModuleType("lava.lib.dl.slayer")
                stub.__path__ = [folder]
                sys.modules["lava.lib.dl.slayer"] = stub
                break
    from lava.lib.dl import netx  # type: ignore[import-not-found]

    return netx


def run_netx(path: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Load ``path`` with ``netx.hdf5.Network``, drive it with ``inputs`` for ``len(inputs)`` steps.

    Initial states stored under our keys ``neuron/uInit`` and ``neuron/vInit`` (x64 units) are
    applied to the loaded blocks before running, as netx has no field for them.

    Args:
        path: a netx HDF5 file (a fresh path: netx never closes the files it opens).
        inputs: ``(steps, *input_shape)`` 0/1 spikes of the full input layer, CHW order.
    Returns:
        ``spikes``: ``(steps, *output_shape)`` output spikes (CHW order); ``u`` and ``v``: the
        output block's final states (CHW order).
    """
    from lava.magma.core.run_conditions import RunSteps  # type: ignore[import-not-found]
    from lava.magma.core.run_configs import Loihi2SimCfg  # type: ignore[import-not-found]
    from lava.proc import io  # type: ignore[import-not-found]

    from snn_encodings.export.netx_read import read_netx

    netx = import_netx()
    steps = int(inputs.shape[0])
    blocks = [layer for layer in read_netx(path).layers if layer.neuron is not None]
    net = netx.hdf5.Network(net_config=path)
    for block, layer in zip(net.layers, blocks):
        for name in ("u", "v"):
            value = getattr(layer.neuron, f"{name}_init")
            if value is not None:
                full = np.broadcast_to(np.asarray(value, dtype=np.int64), layer.shape)
                getattr(block.neuron, name).init = _to_lava(full.copy())
    data = np.moveaxis(_to_lava_time(inputs), 0, -1).astype(np.int32)
    source = io.source.RingBuffer(data=data)
    sink = io.sink.RingBuffer(shape=net.out.shape, buffer=steps)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        spikes = np.moveaxis(sink.data.get(), -1, 0)
        last = net.layers[-1].neuron
        u, v = last.u.get(), last.v.get()
    finally:
        net.stop()
    return {
        "spikes": _from_lava_time(spikes).astype(np.int8),
        "u": _from_lava(np.asarray(u)).astype(np.int64),
        "v": _from_lava(np.asarray(v)).astype(np.int64),
    }


def _to_lava(x: np.ndarray) -> np.ndarray:
    """CHW -> Lava's WHC (a 1-D vector is unchanged)."""
    return x if x.ndim <= 1 else np.transpose(x, tuple(range(x.ndim))[::-1])


def _from_lava(x: np.ndarray) -> np.ndarray:
    return _to_lava(x)


def _to_lava_time(x: np.ndarray) -> np.ndarray:
    """``(T, C, H, W)`` -> ``(T, W, H, C)``; ``(T, N)`` unchanged."""
    return x if x.ndim <= 2 else np.transpose(x, (0, *range(x.ndim - 1, 0, -1)))


def _from_lava_time(x: np.ndarray) -> np.ndarray:
    return _to_lava_time(x)


def main(argv: list[str] | None = None) -> int:
    """``python -m snn_encodings.export.lava_run IN.npz OUT.npz`` (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m snn_encodings.export.lava_run IN.npz OUT.npz", file=sys.stderr)
        return 2
    request = np.load(args[0], allow_pickle=False)
    path, inputs = str(request["path"]), request["inputs"]
    if "batch" in request.files and bool(request["batch"]):
        runs = [run_netx(path, sample) for sample in inputs]
        result = {key: np.stack([run[key] for run in runs]) for key in runs[0]}
    else:
        result = run_netx(path, inputs)
    np.savez(args[1], **result)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
