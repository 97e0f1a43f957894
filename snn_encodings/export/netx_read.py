"""Read a netx HDF5 file back into an :class:`~snn_encodings.export.layers.IntNetwork`.

An independent reader (plain h5py, no Lava): the tests run the fixed-point model from what the
file holds, not from the objects that wrote it. It reads keys the way netx does (``type`` as
bytes, numeric keys as integers) plus our own keys (initial states, metadata).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from snn_encodings.errors import ExportError
from snn_encodings.export.layers import Cuba, IntNetwork, Layer, LayerKind

__all__ = ["read_netx"]

_KINDS: tuple[LayerKind, ...] = ("input", "dense", "dense_rec", "conv", "flatten")
_NETX_DEFAULT = {"v_th_mant": 1 << 18 - 1, "i_decay": 0, "v_decay": 4096}
"""netx's neuron when a layer has none (``1 << 18 - 1`` is 131072: operator precedence)."""


def read_netx(path: str | os.PathLike[str]) -> IntNetwork:
    """Read the netx file at ``path``.

    Args:
        path: an HDF5 file with a ``/layer`` group, as netx reads it.
    Returns:
        The integer network it describes (non-integer values truncated toward zero, as netx's
        ``astype(int)`` does).
    Raises:
        ExportError: if the file is missing, not HDF5, or holds a layer netx would skip or reject.
    """
    h5py = _h5py()
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ExportError(f"read_netx: cannot open {os.fspath(path)!r} as HDF5: {error}") from error
    with handle:
        if "layer" not in handle:
            raise ExportError(
                f"read_netx: {os.fspath(path)!r} has no /layer group; not a netx file"
            )
        group = handle["layer"]
        layers = tuple(_read_layer(group[str(i)], i) for i in range(len(group)))
        meta = json.loads(handle.attrs.get("snn_encodings", "{}"))
    clock = int(meta.pop("clock_inputs", 0))
    return IntNetwork(layers=layers, metadata=meta, clock_inputs=clock)


def _h5py() -> Any:
    try:
        import h5py  # type: ignore[import-untyped]
    except ImportError as error:
        raise ExportError('netx files need h5py: pip install "snn-encodings[lava]"') from error
    return h5py


def _text(dataset: Any) -> str:
    value = dataset[0] if dataset.shape else dataset[()]
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _ints(dataset: Any) -> np.ndarray:
    return np.asarray(dataset[()]).astype(np.int64)


def _pair(group: Any, key: str, default: int) -> tuple[int, int]:
    if key not in group:
        return (default, default)
    value = _ints(group[key]).reshape(-1)
    return (int(value[0]), int(value[-1]))


def _read_layer(group: Any, index: int) -> Layer:
    kind = _text(group["type"])
    if kind not in _KINDS:
        raise ExportError(
            f"read_netx: layer {index} has type {kind!r}, which this reader does not run"
        )
    shape = tuple(int(s) for s in _ints(group["shape"]).reshape(-1))
    meta = json.loads(group.attrs.get("snn_encodings", "{}"))
    name = str(meta.pop("name", ""))
    if kind in ("input", "flatten"):
        return Layer(kind=kind, shape=shape, name=name, metadata=meta)
    if kind in ("dense", "dense_rec"):
        shape = (int(np.prod(shape)),)
    weight = _ints(group["weight"])
    if kind == "conv" and weight.ndim == 5:
        weight = weight[..., 0]
    if kind != "conv":
        weight = weight.reshape(shape[0], -1)
    return Layer(
        kind=kind,
        shape=shape,
        name=name,
        weight=weight,
        weight_rec=_ints(group["weight_rec"]).reshape(shape[0], -1)
        if "weight_rec" in group
        else None,
        bias=_ints(group["bias"]) if "bias" in group else None,
        delay=_delay(group, weight.shape) if "delay" in group and kind != "conv" else None,
        stride=_pair(group, "stride", 1),
        padding=_pair(group, "padding", 0),
        dilation=_pair(group, "dilation", 1),
        groups=int(_ints(group["groups"])) if "groups" in group else 1,
        neuron=_read_neuron(group, index),
        metadata=meta,
    )


def _delay(group: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A delay in any of netx's forms, as a per-synapse ``(out, in)`` matrix (netx's precedence)."""
    delay = _ints(group["delay"])
    if delay.ndim == 1 and delay.size == shape[0]:
        delay = delay[:, None]
    elif delay.ndim == 1 and delay.size == shape[1]:
        delay = delay[None, :]
    return np.broadcast_to(np.minimum(delay, 62), shape).copy()


def _read_neuron(group: Any, index: int) -> Cuba:
    if "neuron" not in group:
        return Cuba(v_th_mant=_NETX_DEFAULT["v_th_mant"], i_decay=0, v_decay=4096)
    neuron = group["neuron"]
    kind = _text(neuron["type"])
    if kind not in ("CUBA", "LOIHI"):
        raise ExportError(
            f"read_netx: layer {index} has neuron type {kind!r}; only CUBA is run here"
        )
    return Cuba(
        v_th_mant=int(_ints(neuron["vThMant"])),
        i_decay=int(_ints(neuron["iDecay"])),
        v_decay=int(_ints(neuron["vDecay"])),
        u_init=_ints(neuron["uInit"]) if "uInit" in neuron else None,
        v_init=_ints(neuron["vInit"]) if "vInit" in neuron else None,
    )
