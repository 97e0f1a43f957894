"""Saving and loading converted networks: structure + state_dict, weights_only, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from snn_encodings import ICRate, convert
from snn_encodings.conversion import load_network, save_network
from snn_encodings.conversion.evaluate import with_steps
from snn_encodings.conversion.save import payload_checksum
from snn_encodings.data.mnist import mnist_split
from snn_encodings.errors import ExportError


def _network(init: str = "data") -> nn.Module:
    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 10),
    ).eval()
    loader = DataLoader(mnist_split("train", limit=32), batch_size=16)
    return convert(ann, ICRate(steps=6, init=init), loader, per_channel=True)


def test_save_network_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    network = _network()
    path = save_network(network, tmp_path / "net.pt")
    loaded = load_network(path)
    x = mnist_split("eval", limit=8).tensors[0]
    assert loaded.spec == network.spec
    assert torch.equal(loaded(x), network(x))
    assert torch.equal(loaded.twin(x), network.twin(x))
    assert loaded.state_dict().keys() == network.state_dict().keys()
    assert loaded.stages[0].neurons.v0.shape == (4,)
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]


def test_save_network_round_trip_for_every_spec(spec, tmp_path: Path) -> None:
    _round_trip(spec, tmp_path)


def test_save_network_round_trip_for_signed_icrate(tmp_path: Path) -> None:
    _round_trip(ICRate(steps=8, signed=True), tmp_path)


def _round_trip(spec, tmp_path: Path) -> None:
    torch.manual_seed(1)
    ann = nn.Sequential(
        nn.Conv2d(1, 3, 5, stride=3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 10),
    ).eval()
    network = convert(ann, spec, DataLoader(mnist_split("train", limit=16), batch_size=8))
    loaded = load_network(save_network(network, tmp_path / "net.pt"))
    x = mnist_split("eval", limit=4).tensors[0]
    assert loaded.spec == spec
    assert torch.equal(loaded(x), network(x))


def test_save_network_file_loads_with_weights_only(tmp_path: Path) -> None:
    path = save_network(_network(init="ann"), tmp_path / "net.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["spec"] == {
        "type": "ICRate",
        "fields": {
            "steps": 6,
            "threshold": 1.0,
            "init": "ann",
            "compensate": True,
            "input_coding": "analog",
            "signed": None,
        },
    }
    assert [s["kind"] for s in payload["stages"]] == ["neuron", "pool", "neuron", "output"]


def test_with_steps_keeps_per_channel_initial_membranes() -> None:
    network = _network()
    longer = with_steps(network, 12)
    assert torch.equal(longer.stages[0].neurons.v0, network.stages[0].neurons.v0)


def test_load_network_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no such file"):
        load_network(tmp_path / "missing.pt")
    torch.save({"weight": torch.ones(2)}, tmp_path / "state.pt")
    with pytest.raises(ExportError, match="not written by save_network"):
        load_network(tmp_path / "state.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ExportError, match="is not a saved network"):
        load_network(tmp_path / "text.pt")


def test_load_network_rejects_weights_that_do_not_fit(tmp_path: Path) -> None:
    path = save_network(_network(init="ann"), tmp_path / "net.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["stages.0.synapse.ops.0.0.weight"] = torch.zeros(9, 1, 5, 5)
    payload["checksum"] = payload_checksum(payload)  # a consistent file with a wrong shape
    torch.save(payload, path)
    with pytest.raises(ExportError, match="do not fit its structure"):
        load_network(path)


def test_save_network_rejects_a_plain_module(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="expected a SpikingNetwork"):
        save_network(nn.Linear(2, 2), tmp_path / "net.pt")
