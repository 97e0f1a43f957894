"""Lossy NIR export of a converted network (``nir`` package), for frameworks that read NIR.

NIR describes neurons as continuous-time ODEs that reset *to* ``v_reset``; it has no reset by
subtraction, no initial state, no refractory period and no graded spikes, and each importer picks
its own time step. So this export is best-effort. Every node carries the encoding in its
``metadata`` (``encoding``, ``spec``, ``steps``, ``v_init``, ``reset``) so that a reader that
knows snn-encodings can rebuild the exact network; a generic reader loses, per encoding:

- **IC-rate**: the reset by subtraction (``IF`` nodes reset to zero in NIR), the initial membrane
  (only in ``metadata["v_init"]``) and the clock-free per-step bias semantics (``Affine`` bias is
  applied every step by most importers, which matches).
- **Radix** and **Quartz**: not exported (their neurons have no NIR equivalent at all).

Layers: ``Input`` -> (``Flatten`` | ``Affine`` | ``Conv2d`` followed by ``IF``)... -> ``Output``,
weights in threshold units, ``IF(r=1, v_threshold=threshold, v_reset=0)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from snn_encodings.encoding import encoding_for, registered_encodings
from snn_encodings.errors import ExportError
from snn_encodings.export.atomic import write_atomically
from snn_encodings.export.lowering import (
    FloatLayer,
    FloatNetwork,
    chain,
    float_bias,
    float_weight,
    output_shape,
    v0_map,
)

__all__ = ["nir"]


def nir(model: FloatNetwork, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a NIR graph to ``path`` (atomically); see the module docstring for losses.

    Args:
        model: a converted network (:class:`~snn_encodings.export.lowering.FloatNetwork`).
        path: destination file.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    Raises:
        ExportError: for an encoding its record keeps out of NIR, a layer NIR export does not
            handle, a missing ``nir`` package, or a path that cannot be written.
    """
    nir_lib = _nir_package()
    _check_model(model)
    spec = model.spec
    theta = float(spec.threshold)  # type: ignore[attr-defined]
    shape = tuple(model.input_shape)
    chain(model)  # refuses pooling with the reason
    common: dict[str, Any] = {
        "encoding": spec.name,
        "spec": repr(spec),
        "steps": spec.steps_per_layer,
        "reset": "subtract",
    }
    nodes: dict[str, Any] = {"input": nir_lib.Input(input_type={"input": np.array(shape)})}
    edges: list[tuple[str, str]] = []
    last = "input"
    current = shape
    for index, layer in enumerate(model.layers):
        name = layer.name or f"layer{index}"
        if layer.kind == "flatten":
            node = nir_lib.Flatten(
                input_type={"input": np.array(current)}, start_dim=0, metadata=dict(common)
            )
            current = (int(np.prod(current)),)
            nodes[name], last = node, _link(edges, last, name)
            continue
        nodes[name], last = _synapse(nir_lib, layer, current, common), _link(edges, last, name)
        current = output_shape(layer, current)
        v0 = v0_map(layer, spec, current)
        neuron = nir_lib.IF(
            r=np.ones(current),
            v_threshold=np.full(current, theta),
            v_reset=np.zeros(current),
            metadata=dict(common, v_init=v0.tolist()),
        )
        nodes[f"{name}.neuron"], last = neuron, _link(edges, last, f"{name}.neuron")
    nodes["output"] = nir_lib.Output(output_type={"output": np.array(current)})
    _link(edges, last, "output")
    graph = nir_lib.NIRGraph(nodes=nodes, edges=edges, metadata=dict(common), type_check=False)
    return write_atomically(path, lambda temporary: nir_lib.write(temporary, graph), "export.nir")


def _nir_package() -> Any:
    try:
        import nir as nir_lib  # type: ignore[import-untyped]
    except ImportError as error:
        raise ExportError(
            'NIR export needs the nir package: pip install "snn-encodings[nir]"'
        ) from error
    return nir_lib


def _check_model(model: object) -> None:
    if not isinstance(model, FloatNetwork):
        raise ExportError(
            f"export.nir: expected a converted network (FloatNetwork), got {type(model).__name__}"
        )
    if getattr(model.spec, "signed", False):
        raise ExportError(
            "export.nir: ICRate(signed=True) neurons send negative spikes and keep a net spike "
            "count, which NIR's integrate-and-fire nodes do not have (convert chooses them "
            "where plain neurons lose the twin's decisions); convert with ICRate(signed=False) "
            "to export"
        )
    record = encoding_for(model.spec)
    if not record.nir_export:
        exported = ", ".join(r.spec_type.__name__ for r in registered_encodings() if r.nir_export)
        raise ExportError(
            f"export.nir: {type(model.spec).__name__} has no NIR equivalent: "
            f"{record.nir_limit}; NIR export covers {exported}"
        )


def _synapse(nir_lib: Any, layer: FloatLayer, current: tuple[int, ...], common: dict) -> Any:
    """The ``Affine`` or ``Conv2d`` node of a dense or conv layer with input shape ``current``."""
    weight = float_weight(layer)
    bias = float_bias(layer, weight)
    if layer.kind == "dense":
        return nir_lib.Affine(weight=weight, bias=bias, metadata=dict(common))
    return nir_lib.Conv2d(
        input_shape=current[1:],
        weight=weight,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=bias,
        metadata=dict(common),
    )


def _link(edges: list[tuple[str, str]], source: str, target: str) -> str:
    edges.append((source, target))
    return target
