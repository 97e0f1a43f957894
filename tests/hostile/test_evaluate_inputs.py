"""evaluate: label shapes, inputs beyond the calibrated range, meta devices."""

from __future__ import annotations

import warnings

import pytest
import torch
from hostile.helpers import images, labels, tiny_ann

import snn_encodings as se
from snn_encodings.conversion.evaluate import SATURATION_WARNING
from snn_encodings.errors import ConversionError, SnnEncodingsWarning


@pytest.fixture(scope="module")
def network() -> se.SpikingNetwork:
    return se.convert(tiny_ann(), se.ICRate(steps=8), [images(256)])


def test_labels_shaped_b_by_1_count_like_flat_labels(network: se.SpikingNetwork) -> None:
    x, y = images(64, seed=3), labels(64)
    flat = se.evaluate(network, [(x, y)], progress=False)
    column = se.evaluate(network, [(x, y[:, None])], progress=False)
    assert (column.correct, column.samples) == (flat.correct, flat.samples) == (flat.correct, 64)
    assert column.accuracy <= 1.0


def test_one_hot_labels_are_refused_with_the_fix(network: se.SpikingNetwork) -> None:
    x, y = images(8, seed=3), labels(8)
    one_hot = torch.nn.functional.one_hot(y, 5).float()
    with pytest.raises(ConversionError, match=r"one-hot labels pass target.argmax\(1\)"):
        se.evaluate(network, [(x, one_hot)], progress=False)


def test_label_count_other_than_batch_is_refused(network: se.SpikingNetwork) -> None:
    with pytest.raises(ConversionError, match="the batch has 8 inputs but 7 targets"):
        se.evaluate(network, [(images(8), labels(7))], progress=False)


def test_inputs_beyond_the_calibrated_range_warn_once_per_evaluate(
    network: se.SpikingNetwork,
) -> None:
    x, y = images(128, seed=4), labels(128)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calm = se.evaluate(network, [(x, y)], progress=False)
        loud = se.evaluate(network, [(4 * x, y), (4 * x, y)], progress=False)
    relevant = [w for w in caught if issubclass(w.category, SnnEncodingsWarning)]
    assert len(relevant) == 1
    assert "top of the encoding's range" in str(relevant[0].message)
    assert max(calm.saturation) <= SATURATION_WARNING < max(loud.saturation)
    assert len(loud.saturation) == len(loud.layers)


def test_radix_inputs_above_one_count_as_input_saturation() -> None:
    network = se.convert(tiny_ann(), se.Radix(steps=4), [images(256)])
    x = images(32, seed=5)
    with pytest.warns(SnnEncodingsWarning, match="layer 'input'"):
        doubled = se.evaluate(network, [(x * 2, labels(32))], progress=False)
    # the input encoding clips every value above 1: exactly those count
    assert doubled.saturation[0] == pytest.approx(float((x * 2 > 1).float().mean()))


def test_model_on_meta_device_is_refused_by_evaluate() -> None:
    with pytest.raises(ConversionError, match="meta device"):
        se.evaluate(tiny_ann().to("meta"), [(images(4), labels(4))], progress=False)
