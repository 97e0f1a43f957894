"""Converted networks against an independent reference built from the user's own modules.

``tests/reference.py`` re-derives each encoding's quantised ANN from the trained convnet itself
(its own calibration, BatchNorm unfolded, the papers' activation formulas in forward hooks), so
these checks can see calibration, normalisation, bias and initial-membrane bugs that
"SNN == its own twin" cannot. All conversions use ``percentile=None`` (the maximum), which the
reference computes the same way.
"""

from __future__ import annotations

import pytest
import torch
from reference import ReferenceTwin

import snn_encodings as se

ROUNDING = 1e-4  # logit units: float32 vs float64 and folded vs unfolded BatchNorm


@pytest.fixture(scope="module")
def calibration(mnist_calibration) -> list[torch.Tensor]:
    x = mnist_calibration.tensors[0][:500]
    return [x[:250], x[250:]]


@pytest.fixture(scope="module")
def images(mnist_eval) -> torch.Tensor:
    return mnist_eval.tensors[0][:200]


def _pair(ann, spec, calibration):
    network = se.convert(ann, spec, calibration, percentile=None)
    return network, ReferenceTwin(ann, spec, calibration)


@pytest.mark.parametrize("compensate", [True, False], ids=["compensated", "uncompensated"])
def test_icrate_twin_equals_the_independent_reference(
    trained_ann, calibration, images, compensate
) -> None:
    network, reference = _pair(trained_ann, se.ICRate(steps=16, compensate=compensate), calibration)
    with torch.no_grad():
        twin = network.twin(images).double()
    torch.testing.assert_close(twin, reference(images), rtol=0, atol=ROUNDING)


def test_icrate_first_layer_spike_counts_equal_the_reference(
    trained_ann, calibration, images
) -> None:
    """Analog input: the first layer's drive is constant, so its spike count is exactly
    floor(T z + v0/theta), clipped: the reference's first activation."""
    spec = se.ICRate(steps=16)
    network, reference = _pair(trained_ann, spec, calibration)
    network.use_fast_path = False
    recorded: list[torch.Tensor] = []
    hook = network.stages[0].neurons.register_forward_hook(lambda m, a, out: recorded.append(out))
    try:
        with torch.no_grad():
            network(images)
    finally:
        hook.remove()
    rate = recorded[0].sum(0).double() / spec.steps
    torch.testing.assert_close(rate, reference.first_layer(images), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "spec",
    # the reference keeps float weights: on radix's default 2**-12 weight grid 5 % of the
    # logits move by more than ROUNDING, so the comparison takes the finer 2**-16 grid
    [se.Radix(steps=6, weight_bits=16), se.Quartz(t_max=8, analytic=True)],
    ids=["radix", "quartz"],
)
def test_exact_encodings_equal_their_twin_and_track_the_reference(
    trained_ann, calibration, images, spec
) -> None:
    """SNN == twin bitwise, and the twin equals the reference to rounding except for the rare
    sample where a value within rounding of a level boundary lands on the next level (0.5 %
    of the outputs for radix, 0.1 % for Quartz here)."""
    network, reference = _pair(trained_ann, spec, calibration)
    with torch.no_grad():
        out, twin = network(images), network.twin(images)
    assert torch.equal(out, twin)
    expected = reference(images)
    assert (twin.argmax(1) == expected.argmax(1)).float().mean() >= 0.99
    close = ((twin.double() - expected).abs() <= ROUNDING).float().mean()
    assert close >= 0.98, close
