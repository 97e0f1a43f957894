"""The scale search evaluates exact layers in float32 parts; its choices equal the float64 search's."""

from __future__ import annotations

import pytest
import torch

import snn_encodings as se
from snn_encodings import zoo
from snn_encodings.conversion import calibrate, exactness


@pytest.mark.parametrize("spec", [se.Radix(steps=6), se.Quartz(t_max=16)], ids=repr)
def test_narrowed_search_chooses_what_the_float64_search_chooses(spec, monkeypatch) -> None:
    torch.manual_seed(0)
    shape = zoo.input_shape("resnet18")
    model = zoo.set_batch_norm_stats(zoo.build("resnet18", width=0.125), shape)
    x = torch.rand((16, *shape), generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(calibrate, "NARROW_WORK", float("inf"))
    wide = se.convert(model, spec, [x[:8], x[8:]])

    narrowed: list[type] = []
    original = exactness.narrow_synapse

    def counting(*args, **kwargs):
        result = original(*args, **kwargs)
        narrowed.append(type(result))
        return result

    monkeypatch.setattr(calibrate, "NARROW_WORK", 0)
    monkeypatch.setattr(exactness, "narrow_synapse", counting)
    narrow = se.convert(model, spec, [x[:8], x[8:]])

    assert {exactness.NarrowSynapse, exactness.SplitSynapse} & set(narrowed)
    for a, b in zip(wide.stages, narrow.stages):
        assert a.calibration == b.calibration  # percentile, grain and error, bit for bit
    with torch.no_grad():
        assert torch.equal(wide.twin(x), narrow.twin(x))
