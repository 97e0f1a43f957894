"""convert, finetune, netx and specs: inputs that used to crash or be silently inexact."""

from __future__ import annotations

import pytest
import torch
from hostile.helpers import CLASSES, images, labels, tiny_ann
from torch.utils.data import DataLoader, TensorDataset

import snn_encodings as se
from snn_encodings.errors import ConversionError, ExportError, SpecError
from snn_encodings.export import netx


def test_radix_steps_beyond_float64_exactness_are_refused_with_the_reason() -> None:
    with pytest.raises(SpecError, match=r"base\*\*steps \* 2\*\*weight_bits <= 2\*\*52"):
        se.Radix(steps=37, weight_bits=16)
    with pytest.raises(SpecError, match=r"base\*\*steps must be <= 2\*\*40"):
        se.Radix(steps=41)


def test_radix_steps_at_the_bound_stay_exact() -> None:
    network = se.convert(tiny_ann(), se.Radix(steps=40), [images(128)])
    x = images(64, seed=3)
    with torch.no_grad():
        assert torch.equal(network(x), network.twin(x))


def test_model_on_meta_device_is_refused_by_convert() -> None:
    with pytest.raises(ConversionError, match="is on the meta device and holds no values"):
        se.convert(tiny_ann().to("meta"), se.ICRate(), [images(8)])


def test_one_shot_calibration_generator_is_refused() -> None:
    batches = (x for x in [images(64)])
    with pytest.raises(ConversionError, match="one-shot iterator .*pass a list of batches"):
        se.convert(tiny_ann(), se.ICRate(), batches)


def test_netx_unknown_keyword_lists_the_options(tmp_path) -> None:
    network = se.convert(tiny_ann(), se.ICRate(input_coding="sigma_delta"), [images(64)])
    expected = r"unknown option\(s\) \['rest'\]; the options are \['reset', 'unroll_conv'\]"
    with pytest.raises(ExportError, match=expected):
        netx(network, tmp_path / "net.h5", rest="zero")


def test_finetune_with_a_tensor_only_loader_names_the_fix() -> None:
    loader = DataLoader(images(16), batch_size=8)
    with pytest.raises(ConversionError, match=r"yield \(input, target\) batches.*TensorDataset"):
        se.finetune(tiny_ann(), se.ICRate(steps=4), loader, progress=False)


def test_finetune_with_out_of_range_labels_names_the_range() -> None:
    loader = DataLoader(TensorDataset(images(16), labels(16) + CLASSES), batch_size=8)
    with pytest.raises(ConversionError, match=rf"class indices in \[0, {CLASSES}\), got values"):
        se.finetune(tiny_ann(), se.ICRate(steps=4), loader, progress=False)
