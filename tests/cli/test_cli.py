from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from snn_encodings.cli import demo_specs, load_model, main, parse_spec
from snn_encodings.conversion import convert
from snn_encodings.errors import SnnEncodingsError, SpecError
from snn_encodings.models import build
from snn_encodings.specs import ICRate, Quartz


def test_parse_spec_reads_typed_fields() -> None:
    assert parse_spec("icrate:steps=16,init=data,compensate=false") == ICRate(
        steps=16, init="data", compensate=False
    )
    assert parse_spec("ICRate") == ICRate()


def test_parse_spec_reads_quartz_mode() -> None:
    assert parse_spec("quartz:t_max=8,mode=paper") == Quartz(t_max=8, mode="paper")
    with pytest.raises(SpecError, match="Quartz.mode"):
        parse_spec("quartz:mode=early")


def test_demo_specs_run_both_quartz_modes_on_the_closed_form_path() -> None:
    specs = demo_specs([8], ["quartz"], t_max=[16])
    assert specs == [
        ("quartz exact", Quartz(t_max=16, mode="exact", analytic=True)),
        ("quartz paper", Quartz(t_max=16, mode="paper", analytic=True)),
    ]


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("nope:steps=3", SnnEncodingsError, "unknown encoding"),
        ("icrate:foo=3", SnnEncodingsError, "no field 'foo'"),
        ("icrate:steps=x", SnnEncodingsError, "must be an integer"),
        ("icrate:steps=0", SpecError, "ICRate.steps"),
    ],
)
def test_parse_spec_rejects_bad_text(text: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        parse_spec(text)


def test_load_model_reads_state_dict_and_refuses_pickles(tmp_path: Path) -> None:
    model = build("mlp")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_model(str(tmp_path / "w.pt"), "mlp", trust_file=False)
    assert torch.equal(loaded[1].weight, model[1].weight)
    with pytest.raises(SnnEncodingsError, match="--architecture"):
        load_model(str(tmp_path / "w.pt"), None, trust_file=False)
    with pytest.raises(SnnEncodingsError, match="does not match"):
        load_model(str(tmp_path / "w.pt"), "lenet", trust_file=False)
    torch.save(model, tmp_path / "m.pt")
    with pytest.raises(SnnEncodingsError, match="--trust-file"):
        load_model(str(tmp_path / "m.pt"), None, trust_file=False)
    assert isinstance(load_model(str(tmp_path / "m.pt"), None, trust_file=True), torch.nn.Module)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SnnEncodingsError, match="cannot load"):
        load_model(str(tmp_path / "bad.pt"), "mlp", trust_file=False)


def test_demo_prints_a_row_per_variant(
    capsys: pytest.CaptureFixture[str], mnist_cache: str
) -> None:
    code = main(
        [
            "demo",
            "--architecture",
            "mlp",
            "--epochs",
            "1",
            "--steps",
            "4",
            "--encodings",
            "icrate",
            "--eval-limit",
            "100",
            "--calibration-limit",
            "200",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "ANN (mlp)" in out and out.count("icrate init=") == 6


def test_evaluate_command_reports_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["evaluate", str(tmp_path / "missing.pt"), "--spec", "icrate"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_command_writes_a_loadable_network(tmp_path: Path, mnist_cache: str) -> None:
    from snn_encodings.conversion import load_network
    from snn_encodings.data import mnist_split

    model = build("mlp")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "net.pt"
    code = main(
        [
            "convert",
            str(tmp_path / "w.pt"),
            "--architecture",
            "mlp",
            "--spec",
            "icrate:steps=4",
            "--output",
            str(out),
            "--calibration-limit",
            "100",
            "--quiet",
        ]
    )
    assert code == 0
    network = load_network(out)
    x = mnist_split("eval", limit=8).tensors[0]
    calibration = DataLoader(mnist_split("train", limit=100), batch_size=250)
    in_process = convert(model.eval(), ICRate(steps=4), calibration)
    with torch.no_grad():
        assert torch.equal(network(x), in_process(x))
