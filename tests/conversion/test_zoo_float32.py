"""float32 where the exactness bound allows it: the choice at the bound's edge, and the warning
where no float is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snn_encodings as se
from snn_encodings import zoo
from snn_encodings.conversion.exactness import LayerBound, exact_dtype, fraction_bits
from snn_encodings.conversion.twin import ClipQuant
from snn_encodings.errors import SnnEncodingsWarning
from snn_encodings.specs import Quartz, Radix


def test_fraction_bits_of_grid_values() -> None:
    assert fraction_bits(torch.tensor([5.0, -2.0])) == 0
    assert fraction_bits(torch.tensor([1 + 2.0**-16, 0.5])) == 16
    assert fraction_bits(torch.tensor([1 / 3], dtype=torch.float64), limit=40) is None
    assert fraction_bits(torch.tensor([float("nan")])) is None


def test_exact_dtype_switches_at_24_and_53_significand_bits() -> None:
    assert exact_dtype(LayerBound(grid_bits=16, magnitude=2.0**8)) == torch.float32
    assert exact_dtype(LayerBound(grid_bits=16, magnitude=2.0**8 + 2.0**-16)) == torch.float64
    assert exact_dtype(LayerBound(grid_bits=45, magnitude=2.0**8)) == torch.float64
    assert exact_dtype(LayerBound(grid_bits=46, magnitude=2.0**8)) is None
    assert exact_dtype(LayerBound(grid_bits=None, magnitude=1.0)) is None


def _edge_network(weights: list[float]) -> se.SpikingNetwork:
    """Input (scale 1) -> Linear -> clip at 1 (scale 1): the hidden weights are ``weights``."""
    hidden = nn.Linear(len(weights), 1, bias=False)
    head = nn.Linear(1, 2)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([weights]))
    ann = nn.Sequential(hidden, ClipQuant(1.0, trainable=False), head)
    return se.convert(ann, Radix(steps=6, weight_bits=16), [torch.rand(8, len(weights))])


@pytest.mark.parametrize(
    ("weights", "dtype"),
    [
        # 64 levels * (sum |w| + the hidden bias's half step 2**-7) = 2**8 on the 2**-16 grid:
        # exactly 2**24 grid steps
        ([1.0, 1.0, 1 - 2.0**-7 - 2.0**-16, 1 + 2.0**-16], torch.float32),
        ([1.0, 1.0, 1 - 2.0**-7, 1 + 2.0**-16], torch.float64),
        # with inputs >= 0 every partial sum lies between minus the negative weights' sum and
        # the positive weights' sum: the larger side decides, not sum |w| (here 2**8 + 3)
        ([1.0, 1.0, 1 - 2.0**-7 - 2.0**-16, 1 + 2.0**-16, -3.0], torch.float32),
        ([-1.0, -1.0, -(1 - 2.0**-7 - 2.0**-16), -(1 + 2.0**-16), 3.0], torch.float32),
        ([-1.0, -1.0, -(1 - 2.0**-7), -(1 + 2.0**-16), 3.0], torch.float64),
    ],
    ids=[
        "at-the-bound",
        "one-step-over",
        "positive-side-at-the-bound",
        "negative-side-at-the-bound",
        "negative-side-one-step-over",
    ],
)
def test_radix_layer_runs_in_float32_up_to_the_bound(weights: list[float], dtype) -> None:
    network = _edge_network(weights)
    assert network.exact_dtypes()[0] == dtype
    assert f"exact_dtype={dtype}" in repr(network.stages[0])
    n = len(weights)
    x = torch.cat([torch.ones(1, n), torch.rand(31, n, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        fast, twin = network(x), network.twin(x)
        network.use_fast_path = False
        stepped = network(x)
    assert torch.equal(fast, twin) and torch.equal(stepped, twin)


def test_slim_vgg_quartz_picks_float32_for_some_layers_and_stays_exact() -> None:
    torch.manual_seed(0)
    model = zoo.set_batch_norm_stats(zoo.build("vgg11_bn", width=0.125), zoo.input_shape("vgg11_bn"))
    x = torch.rand((4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    network = se.convert(model, Quartz(t_max=16), [x])
    assert torch.float32 in network.exact_dtypes()
    with torch.no_grad():
        assert torch.equal(network(x), network.twin(x))


def test_average_pool_over_nine_elements_warns_at_convert() -> None:
    ann = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)
    )
    with pytest.warns(SnnEncodingsWarning, match=r"layer 'output'.*not a power of two"):
        network = se.convert(ann, Quartz(t_max=16), [torch.rand(4, 1, 8, 8)])
    assert network.exact_dtypes()[-1] is None


def test_per_channel_residual_shortcuts_split_into_two_exact_float32_parts() -> None:
    """An identity shortcut whose two per-channel gains are merged splits its gain between the
    two float32 parts like a weight, so no layer of a per-channel ResNet-18 needs float64 for
    radix, and each split layer's two float32 sums add up to its float64 sum exactly. (With
    16 weight bits: at the default 12 most of these layers fit float32 whole.)"""
    torch.manual_seed(0)
    model = zoo.set_batch_norm_stats(zoo.build("resnet18", width=0.25), zoo.input_shape("resnet18"))
    x = torch.rand((16, *zoo.input_shape("resnet18")), generator=torch.Generator().manual_seed(1))
    network = se.convert(model, Radix(steps=6, weight_bits=16), [x], per_channel=True)
    stages = [stage for stage in network.stages if stage.synapse is not None]
    assert all(stage.exact_dtype == torch.float32 or stage.split for stage in stages)
    assert sum(len(stage.synapse.sources) == 2 and stage.split for stage in stages) >= 5
    with torch.no_grad():
        values = network.activations(x)
        for index, stage in enumerate(network.stages):
            if stage.split:
                wide = stage.synapse.value(values)
                assert torch.equal(network.narrow_synapse(index).value(values), wide)
        assert torch.equal(network(x), network.twin(x))
