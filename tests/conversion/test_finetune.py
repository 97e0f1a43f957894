"""Fine-tuning: starts where convert is, keeps the best validation epoch, gains at low T, and
converts with per-channel clip bounds to an SNN equal to its twin."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import snn_encodings as se
from snn_encodings.conversion.finetune import with_twin_activations
from snn_encodings.conversion.twin import ClipQuant
from snn_encodings.errors import ConversionError


def _accuracy(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum()) / len(y)


def _validation(mnist_eval: TensorDataset, size: int = 400) -> TensorDataset:
    return TensorDataset(*(t[:size] for t in mnist_eval.tensors))


def _hidden_synapses(network: se.SpikingNetwork) -> list[dict[str, torch.Tensor]]:
    return [s.synapse.state_dict() for s in network.stages if s.kind == "neuron"]


def test_twin_activations_start_at_converts_own_scales(trained_ann, mnist_calibration):
    spec = se.Quartz(t_max=16)
    calibration = DataLoader(Subset(mnist_calibration, range(512)), batch_size=256)
    model = with_twin_activations(trained_ann, spec, calibration)
    reference = se.convert(trained_ann, spec, calibration)
    twinned = se.convert(model, spec, calibration)
    bounds = [m.bound for m in model.modules() if isinstance(m, ClipQuant)]
    chosen = [s.calibration for s in reference.stages if s.kind == "neuron"]
    assert [b.dim() == 1 for b in bounds] == [c.per_channel for c in chosen]
    assert any(b.dim() == 1 for b in bounds)  # the search picks per-channel scales here
    for ours, theirs in zip(_hidden_synapses(twinned), _hidden_synapses(reference), strict=True):
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_finetune_never_returns_a_worse_model_on_validation(
    trained_ann, mnist_calibration, mnist_eval
):
    spec = se.Radix(steps=6)
    validation = _validation(mnist_eval)
    data = Subset(mnist_calibration, range(256))
    calibration = DataLoader(data, batch_size=128)
    loader = DataLoader(data, batch_size=64, shuffle=True)
    tuned = se.finetune(
        trained_ann, spec, loader, validation=DataLoader(validation, batch_size=250),
        calibration=calibration, epochs=1, lr=1.0, progress=False,
    )  # a learning rate that wrecks the weights: every epoch is worse than the start
    result = tuned.finetune_result
    assert result.epochs and max(result.epochs) < result.start
    assert result.best_epoch == 0 and result.best == result.start
    start = with_twin_activations(trained_ann, spec, calibration).state_dict()
    assert start.keys() == tuned.state_dict().keys()
    assert all(torch.equal(tuned.state_dict()[k], start[k]) for k in start)
    assert _accuracy(se.convert(tuned, spec, calibration).twin, validation) == result.start


@pytest.mark.parametrize("spec", [se.Radix(steps=4), se.Quartz(t_max=8)], ids=["radix", "quartz"])
def test_finetuned_per_channel_bounds_convert_to_an_snn_equal_to_its_twin(
    trained_ann, mnist_calibration, mnist_eval, spec
):
    data = Subset(mnist_calibration, range(256))
    calibration = DataLoader(data, batch_size=128)
    tuned = se.finetune(
        trained_ann, spec, DataLoader(data, batch_size=64, shuffle=True),
        validation=DataLoader(_validation(mnist_eval, 200), batch_size=200),
        calibration=calibration, epochs=1, per_channel=True, keep_best=False, progress=False,
    )
    bounds = [m.bound for m in tuned.modules() if isinstance(m, ClipQuant)]
    assert bounds and all(b.dim() == 1 and b.numel() > 1 for b in bounds)
    start = with_twin_activations(trained_ann, spec, calibration, per_channel=True)
    initial = [m.bound for m in start.modules() if isinstance(m, ClipQuant)]
    assert any(not torch.equal(a, b) for a, b in zip(bounds, initial, strict=True))  # trained
    network = se.convert(tuned, spec, calibration)
    assert all(s.calibration.per_channel for s in network.stages if s.kind == "neuron")
    x = mnist_eval.tensors[0][:64]
    with torch.no_grad():
        assert torch.equal(network(x), network.twin(x))


def test_convert_takes_a_per_channel_clip_bound_as_the_layers_scale():
    torch.manual_seed(0)
    bound = torch.tensor([0.5, 1.0, 2.0, 4.0])
    model = nn.Sequential(
        nn.Linear(6, 4), ClipQuant(bound, levels=2**6, upper=1 - 2**-6), nn.Linear(4, 3)
    )
    x = torch.rand(32, 6)
    network = se.convert(model, se.Radix(steps=6), [x])
    hidden = network.stages[0]
    assert hidden.calibration.per_channel
    # the hidden layer's normalised bias is the ANN's divided by each channel's bound
    assert torch.allclose(hidden.synapse.bias.float(), model[0].bias.detach() / bound, atol=2**-12)
    # the ANN's clipped, quantised activation (an independent float reference) on the input as
    # radix holds it (6 binary digits) gives the output, up to the weights' 2**-16 grid
    with torch.no_grad():
        expected = model(torch.floor(x * 2**6) / 2**6)
        assert torch.allclose(network.twin(x).float(), expected, atol=1e-4)


def test_clip_quant_per_channel_clips_each_channel_at_its_own_bound():
    layer = ClipQuant(torch.tensor([1.0, 2.0]), levels=4)
    x = torch.tensor([[[3.0], [1.3]], [[0.6], [-1.0]]])  # (B=2, C=2, 1)
    # channel 0 on the grid 1/4 up to 1, channel 1 on the grid 2/4 up to 2
    expected = torch.tensor([[[1.0], [1.0]], [[0.5], [0.0]]])
    assert torch.equal(layer(x), expected)
    with pytest.raises(ConversionError, match="positive"):
        ClipQuant(torch.tensor([1.0, 0.0]))


def test_finetune_gains_at_low_radix_steps_and_keeps_batchnorm_statistics(
    trained_ann, mnist_calibration, mnist_eval
):
    # rounding radix starts close to the ANN; at T = 2 (four levels) one epoch still gains
    # (95.9 -> 96.2 % on these 1 000 images)
    torch.manual_seed(0)  # the shuffled loader's order
    spec = se.Radix(steps=2)
    validation = _validation(mnist_eval, 1000)
    calibration = DataLoader(mnist_calibration, batch_size=250)
    loader = DataLoader(mnist_calibration, batch_size=50, shuffle=True)
    tuned = se.finetune(
        trained_ann, spec, loader, validation=DataLoader(validation, batch_size=250),
        calibration=calibration, epochs=1, progress=False,
    )
    result = tuned.finetune_result
    assert result.best_epoch == 1 and result.best >= result.start + 0.002
    before = _accuracy(se.convert(trained_ann, spec, calibration).twin, validation)
    after = _accuracy(se.convert(tuned, spec, calibration).twin, validation)
    assert after >= before + 0.002
    for name, value in trained_ann.state_dict().items():
        if "running" in name:
            assert torch.equal(tuned.state_dict()[name], value), name


def test_finetune_holds_out_every_tenth_sample_without_a_validation_loader(
    trained_ann, mnist_calibration
):
    spec = se.ICRate(steps=8)
    data = Subset(mnist_calibration, range(200))
    calibration = DataLoader(data, batch_size=100)
    tuned = se.finetune(
        trained_ann, spec, DataLoader(data, batch_size=50), calibration=calibration, epochs=1,
        progress=False,
    )
    held = TensorDataset(*(t[9:200:10] for t in mnist_calibration.tensors))
    network = se.convert(tuned, spec, calibration)
    assert _accuracy(network, held) == tuned.finetune_result.best


def test_finetune_selects_on_the_snn_where_it_may_differ_from_its_twin(
    trained_ann, mnist_calibration, mnist_eval
):
    spec = se.ICRate(steps=4)
    validation = _validation(mnist_eval, 1000)
    calibration = DataLoader(Subset(mnist_calibration, range(256)), batch_size=128)
    measured = {
        select_on: se.finetune(
            trained_ann,
            spec,
            calibration,
            validation=DataLoader(validation, batch_size=250),
            calibration=calibration,
            epochs=0,
            select_on=select_on,
            progress=False,
        ).finetune_result
        for select_on in ("auto", "twin")
    }
    network = se.convert(with_twin_activations(trained_ann, spec, calibration), spec, calibration)
    snn, twin = _accuracy(network, validation), _accuracy(network.twin, validation)
    assert snn != twin  # IC-rate at T=4 is not exact: the two measures must differ here
    assert measured["auto"].selected_on == "snn" and measured["auto"].start == snn
    assert measured["twin"].selected_on == "twin" and measured["twin"].start == twin


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (se.Quartz(t_max=8), "twin"),
        (se.Radix(steps=4), "twin"),
        (se.Radix(steps=4, mode="paper"), "snn"),
    ],
    ids=["quartz-exact", "radix-exact", "radix-paper"],
)
def test_finetune_measures_the_twin_only_where_the_snn_equals_it(
    trained_ann, mnist_calibration, spec, expected
):
    data = DataLoader(Subset(mnist_calibration, range(100)), batch_size=50)
    tuned = se.finetune(
        trained_ann, spec, data, validation=data, calibration=data, epochs=0, progress=False
    )
    assert tuned.finetune_result.selected_on == expected


def test_finetune_refuses_an_unknown_selection(trained_ann, mnist_calibration):
    data = DataLoader(Subset(mnist_calibration, range(100)), batch_size=50)
    with pytest.raises(ConversionError, match="select_on"):
        se.finetune(trained_ann, se.ICRate(steps=4), data, select_on="ann", progress=False)
