"""Write Loihi netx HDF5 files (lava-dl's ``netx.hdf5.Network`` format).

:func:`netx` is the public entry point: it takes a converted network (or an already integer
:class:`~snn_encodings.export.layers.IntNetwork`), builds the integer layers its encoding needs
(:mod:`snn_encodings.export.lowering`), checks that netx loads them and computes the same thing,
and writes the file atomically. :func:`write_netx` writes an integer network as it is.

What goes in the file: per layer ``type`` (bytes), ``shape`` (CHW), integer ``weight``,
``weight_rec``, ``bias``, 2-D ``delay``, conv ``stride``/``padding``/``dilation``/``groups``, and
``neuron/{type=CUBA, vThMant, iDecay, vDecay, refDelay, gradedSpike}``. Our own keys, which netx
ignores: ``neuron/uInit`` and ``neuron/vInit`` (initial states in x64 units, to apply after
loading, see :mod:`snn_encodings.export.lava_run`), a JSON ``snn_encodings`` attribute per layer
(source name, quantisation) and on the root (encoding, steps, latency, clock inputs).
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snn_encodings.errors import ExportError
from snn_encodings.export.atomic import write_atomically
from snn_encodings.export.layers import IntNetwork, Layer, check_network
from snn_encodings.export.lowering import FloatNetwork, LayerReport, lower
from snn_encodings.export.netx_read import _h5py

__all__ = ["ExportReport", "LayerReport", "netx", "write_netx"]


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What :func:`netx` wrote.

    Attributes:
        path: the file.
        network: the integer network in the file.
        layers: per synaptic layer of the source network, its quantisation.
        notes: what the file does differently from the float network, or on hardware.
    """

    path: Path
    network: IntNetwork
    layers: tuple[LayerReport, ...]
    notes: tuple[str, ...] = ()


def netx(model: Any, path: str | os.PathLike[str], **options: Any) -> ExportReport:
    """Export a converted spiking network to a lava-dl netx HDF5 file.

    Args:
        model: the :class:`~snn_encodings.SpikingNetwork` that :func:`snn_encodings.convert`
            returns (read by :func:`~snn_encodings.export.converted.float_network`), a
            :class:`~snn_encodings.export.lowering.FloatNetwork`, or an
            :class:`~snn_encodings.export.layers.IntNetwork` (written as it is).
        path: the file to write (replaced atomically).
        options: passed to :func:`~snn_encodings.export.lowering.lower`: ``reset="subtract"``
            (faithful IC-rate, dense layers) or ``"zero"``, ``unroll_conv=True`` (faithful
            IC-rate through convolutions written as dense layers).
    Returns:
        An :class:`ExportReport` with the per-layer quantisation error.
    Raises:
        ExportError: if the model is not a converted network, if netx cannot express a layer
            (naming it, why, and what to do), if a value does not fit Loihi's integer ranges, or
            if the file cannot be written. Nothing is left behind on error.
    Example:
        >>> import numpy as np, tempfile, os
        >>> from snn_encodings.export.lowering import FloatLayer, FloatNetwork
        >>> from snn_encodings.specs import ICRate
        >>> net = FloatNetwork(spec=ICRate(steps=4, input_coding="sigma_delta"), input_shape=(2,),
        ...     layers=(FloatLayer(kind="dense", name="fc", weight=np.array([[0.5, 0.25]])),))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     report = netx(net, os.path.join(d, "model.net"))
        >>> report.layers[0].scale, report.network.layers[1].weight.tolist()
        (254.0, [[128, 64]])
    """
    parameters = inspect.signature(lower).parameters.values()
    known = sorted(p.name for p in parameters if p.kind == p.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ExportError(f"export.netx: unknown option(s) {unknown}; the options are {known}")
    if isinstance(model, IntNetwork):
        if options:
            raise ExportError(
                f"export.netx: options {sorted(options)} apply to converted networks only"
            )
        write_netx(model, path)
        return ExportReport(path=Path(path), network=model, layers=())
    from snn_encodings.conversion.network import SpikingNetwork

    if isinstance(model, SpikingNetwork):
        from snn_encodings.export.converted import float_network

        model = float_network(model)
    if isinstance(model, FloatNetwork):
        network, layers, notes = lower(model, **options)
        write_netx(network, path)
        return ExportReport(path=Path(path), network=network, layers=layers, notes=notes)
    from torch import nn

    if isinstance(model, nn.Module):
        raise ExportError(
            f"export.netx: got a plain torch module ({type(model).__name__}), not a converted "
            "spiking network; convert it first with snn_encodings.convert(ann, spec, "
            "calibration=...)"
        )
    raise ExportError(
        f"export.netx: cannot export a {type(model).__name__}; pass a converted network "
        "(snn_encodings.convert's SpikingNetwork, or a FloatNetwork) or an IntNetwork"
    )


def write_netx(network: IntNetwork, path: str | os.PathLike[str]) -> Path:
    """Write ``network`` to ``path`` as a netx HDF5 file, atomically.

    The file is written to a temporary file in the same folder and moved into place with
    :func:`os.replace`; on any error the temporary file is removed and ``path`` is untouched.

    Args:
        network: a valid integer network (checked with :func:`check_network` first).
        path: destination.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    Raises:
        ExportError: for an invalid network or a path that cannot be written.
    """
    check_network(network)
    h5py = _h5py()

    def write(temporary: str) -> None:
        with h5py.File(temporary, "w") as file:
            meta = dict(network.metadata, clock_inputs=network.clock_inputs)
            file.attrs["snn_encodings"] = json.dumps(meta, sort_keys=True)
            group = file.create_group("layer")
            for index, layer in enumerate(network.layers):
                _write_layer(group.create_group(str(index)), layer)

    return write_atomically(path, write, "export.netx")


def _packed(values: Any) -> dict[str, Any]:
    """int32 data, gzip-compressed when large (unrolled convs); h5py reads it back transparently."""
    data = np.asarray(values, dtype=np.int32)
    return {"data": data, "compression": "gzip"} if data.size > 65536 else {"data": data}


def _write_layer(group: Any, layer: Layer) -> None:
    group.create_dataset("type", (1,), "S10", [layer.kind.encode("ascii")])
    group.create_dataset("shape", data=np.asarray(layer.shape, dtype=np.int64))
    group.attrs["snn_encodings"] = json.dumps(dict(layer.metadata, name=layer.name), sort_keys=True)
    if layer.kind in ("input", "flatten"):
        return
    group.create_dataset("weight", **_packed(layer.weight))
    if layer.weight_rec is not None:
        group.create_dataset("weight_rec", **_packed(layer.weight_rec))
    if layer.bias is not None:
        group.create_dataset("bias", data=np.asarray(layer.bias, dtype=np.int32))
    if layer.delay is not None:
        group.create_dataset("delay", data=np.asarray(layer.delay, dtype=np.int32))
    if layer.kind == "conv":
        group.create_dataset("stride", data=np.asarray(layer.stride, dtype=np.int64))
        group.create_dataset("padding", data=np.asarray(layer.padding, dtype=np.int64))
        group.create_dataset("dilation", data=np.asarray(layer.dilation, dtype=np.int64))
        group.create_dataset("groups", data=np.int64(layer.groups))
    neuron = layer.neuron
    assert neuron is not None  # checked by check_network
    cuba = group.create_group("neuron")
    cuba.create_dataset("type", (1,), "S10", [b"CUBA"])
    cuba.create_dataset("vThMant", data=np.int64(neuron.v_th_mant))
    cuba.create_dataset("iDecay", data=np.int64(neuron.i_decay))
    cuba.create_dataset("vDecay", data=np.int64(neuron.v_decay))
    cuba.create_dataset("refDelay", data=np.int64(1))
    cuba.create_dataset("gradedSpike", data=False)
    if neuron.u_init is not None:
        cuba.create_dataset("uInit", data=np.asarray(neuron.u_init, dtype=np.int64))
    if neuron.v_init is not None:
        cuba.create_dataset("vInit", data=np.asarray(neuron.v_init, dtype=np.int64))
