"""The command line: limits, devices, spec text and --output checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import snn_encodings.cli as cli
from snn_encodings.cli import main, parse_spec
from snn_encodings.errors import SnnEncodingsError
from snn_encodings.models import build
from snn_encodings.specs import Radix


@pytest.mark.parametrize(
    ("argument", "value"),
    [("--eval-limit", "-1999"), ("--calibration-limit", "0")],
)
def test_non_positive_limits_are_refused(
    argument: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", argument, value, "model.pt", "--spec", "icrate"])
    assert stopped.value.code == 2
    assert f"argument {argument}: must be at least 1, got {value}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "phrase"),
    [("bogus", "'bogus' is not a torch device"), ("meta", "meta tensors hold no data")],
)
def test_unusable_devices_are_refused(
    device: str, phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--device", device, "model.pt", "--spec", "icrate"])
    assert phrase in capsys.readouterr().err


def test_optional_float_fields_parse_numbers_and_none() -> None:
    assert parse_spec("radix:leak=0.5,threshold=none") == Radix(leak=0.5, threshold=None)


def test_a_field_without_value_says_so() -> None:
    with pytest.raises(SnnEncodingsError, match=r"ICRate.steps needs a value: write steps=VALUE"):
        parse_spec("icrate:steps")


def test_convert_output_into_a_missing_folder_fails_before_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "mlp.pt"
    torch.save(build("mlp").state_dict(), model)

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted although the output cannot be written")

    monkeypatch.setattr(cli, "convert", no_conversion)
    output = tmp_path / "missing" / "net.pt"
    arguments = ["convert", "--quiet", "--architecture", "mlp", str(model), "--spec", "icrate"]
    assert main([*arguments, "--output", str(output)]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
