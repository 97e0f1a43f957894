"""Lossy NIR export: the graph reads back with the encoding in its metadata."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require
from snn_encodings.errors import ExportError
from snn_encodings.export.lowering import FloatLayer, FloatNetwork
from snn_encodings.export.nir import nir as export_nir
from snn_encodings.specs import ICRate


def test_nir_export_roundtrips_weights_and_metadata(tmp_path):
    require("nir")
    import nir

    weight = np.arange(12.0).reshape(2, 6) / 10
    net = FloatNetwork(
        spec=ICRate(steps=8, input_coding="sigma_delta"),
        input_shape=(1, 2, 3),
        layers=(
            FloatLayer(kind="flatten"),
            FloatLayer(kind="dense", name="fc", weight=weight, bias=np.array([0.1, -0.2])),
        ),
    )
    graph = nir.read(export_nir(net, tmp_path / "net.nir"))
    assert np.allclose(graph.nodes["fc"].weight, weight)
    neuron = graph.nodes["fc.neuron"]
    assert neuron.metadata["encoding"] == "icrate"
    assert np.allclose(neuron.metadata["v_init"], 0.5)
    assert [p.name for p in tmp_path.iterdir()] == ["net.nir"]


def test_nir_export_unwritable_path_raises(tmp_path):
    require("nir")
    net = FloatNetwork(
        spec=ICRate(input_coding="sigma_delta"),
        input_shape=(2,),
        layers=(FloatLayer(kind="dense", weight=np.ones((1, 2))),),
    )
    with pytest.raises(ExportError, match="cannot write"):
        export_nir(net, tmp_path / "missing" / "net.nir")


def test_nir_export_refuses_signed_icrate(tmp_path):
    net = FloatNetwork(
        spec=ICRate(input_coding="sigma_delta", signed=True),
        input_shape=(2,),
        layers=(FloatLayer(kind="dense", name="fc", weight=np.ones((2, 2)), bias=np.zeros(2)),),
    )
    with pytest.raises(ExportError, match="signed=True.*negative spikes"):
        export_nir(net, tmp_path / "net.nir")
