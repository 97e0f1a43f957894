"""save_network / load_network: tampered files, unwritable targets, interrupted writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hostile.helpers import images, tiny_ann

import snn_encodings as se
from snn_encodings.conversion import load_network, save_network
from snn_encodings.conversion.save import payload_checksum
from snn_encodings.errors import ExportError

WEIGHT = "stages.0.synapse.ops.0.1.weight"


@pytest.fixture(scope="module")
def network() -> se.SpikingNetwork:
    return se.convert(tiny_ann(), se.ICRate(steps=8), [images(128)])


def _tampered(path: Path, change: Any, *, resign: bool = True) -> Path:
    """Apply ``change(payload)`` to a saved file; re-sign it (a deliberate, consistent edit)."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    if resign:
        payload["checksum"] = payload_checksum(payload)
    torch.save(payload, path)
    return path


def test_one_flipped_bit_in_a_weight_is_refused(network, tmp_path: Path) -> None:
    path = save_network(network, tmp_path / "net.pt")

    def flip(payload: dict[str, Any]) -> None:
        bits = payload["state_dict"][WEIGHT].view(-1).view(torch.int32)
        bits[0] ^= 1 << 30  # an exponent bit: the weight becomes ~1e37

    _tampered(path, flip, resign=False)
    with pytest.raises(ExportError, match="checksum .* does not match its contents"):
        load_network(path)


def test_nan_weights_are_refused_even_with_a_valid_checksum(network, tmp_path: Path) -> None:
    path = save_network(network, tmp_path / "net.pt")
    _tampered(path, lambda p: p["state_dict"][WEIGHT].view(-1).__setitem__(0, float("nan")))
    with pytest.raises(ExportError, match="contains NaN or inf"):
        load_network(path)


def test_unknown_stage_kind_is_refused(network, tmp_path: Path) -> None:
    path = save_network(network, tmp_path / "net.pt")
    _tampered(path, lambda p: p["stages"][0].__setitem__("kind", "bogus"))
    with pytest.raises(ExportError, match="stage 0 .* has kind 'bogus'"):
        load_network(path)


def test_unknown_spec_field_is_refused(network, tmp_path: Path) -> None:
    path = save_network(network, tmp_path / "net.pt")
    _tampered(path, lambda p: p["spec"]["fields"].__setitem__("colour", "red"))
    with pytest.raises(ExportError, match=r"unknown field\(s\) \['colour'\]"):
        load_network(path)


def test_missing_key_is_refused(network, tmp_path: Path) -> None:
    path = save_network(network, tmp_path / "net.pt")
    _tampered(path, lambda p: p.pop("input_shape"), resign=False)
    with pytest.raises(ExportError, match=r"lacks the key\(s\) \['input_shape'\]"):
        load_network(path)


def test_huge_layer_is_refused_before_allocation(network, tmp_path: Path) -> None:
    path = save_network(network, tmp_path / "net.pt")

    def grow(payload: dict[str, Any]) -> None:
        payload["stages"][0]["ops"][0][1]["arguments"]["out_features"] = 10**9

    _tampered(path, grow)
    expected = "would allocate 16,000,000,197 values but the file holds 717"
    with pytest.raises(ExportError, match=expected):
        load_network(path)


def test_saving_into_a_missing_folder_names_the_folder(network, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="the folder .*missing' does not exist; create it"):
        save_network(network, tmp_path / "missing" / "net.pt")


def test_saving_onto_a_directory_is_refused_without_naming_a_temp_file(
    network, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="it is a directory; give a file name") as caught:
        save_network(network, tmp_path)
    assert ".tmp" not in str(caught.value)


def test_saving_onto_a_non_regular_file_leaves_it_alone(network, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match="not a regular file"):
        save_network(network, fifo)
    assert fifo.is_fifo()


def test_interrupted_save_leaves_no_temporary_file(
    network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_network(network, tmp_path / "net.pt")
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_saves_are_removed_by_the_next(network, tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".net.pt.{int(dead.stdout)}.0123abcd.tmp"
    stale.write_bytes(b"half a file")
    unrelated = tmp_path / ".other.pt.1.0123abcd.tmp"
    unrelated.write_bytes(b"not ours")
    save_network(network, tmp_path / "net.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [unrelated.name, "net.pt"]


def test_a_saved_network_still_round_trips(network, tmp_path: Path) -> None:
    loaded = load_network(save_network(network, tmp_path / "net.pt"))
    x = images(16, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x), network(x))
