from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snn_encodings as se
from snn_encodings.conversion.rules.icrate import ICRateRule
from snn_encodings.conversion.twin import clip_quant
from snn_encodings.errors import ConversionError


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(self.conv1(x)))
        b = torch.relu(self.conv2(a) + a)
        c = self.avg(self.pool(b))
        return self.fc(self.drop(torch.flatten(c, 1)))


def _loader(shape: tuple[int, ...], n: int = 64, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=generator)
    return DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long)), batch_size=16)


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_twin_reproduces_ann_through_bn_residual_and_pooling() -> None:
    ann = _randomised(_Residual())
    loader = _loader((1, 8, 8))
    # a twin with a fine grid and scales at the data maximum is the ANN itself
    network = se.convert(ann, se.ICRate(steps=2**20, init="zero"), loader, percentile=None)
    x = next(iter(loader))[0]
    torch.testing.assert_close(network.twin(x), ann(x), atol=1e-4, rtol=1e-4)


def test_convert_leaves_user_model_unchanged() -> None:
    ann = _randomised(_Residual())
    ann.train()
    before = copy.deepcopy(ann.state_dict())
    se.convert(ann, se.ICRate(steps=8, init="data"), _loader((1, 8, 8)))
    assert ann.training
    for key, value in ann.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(
    ("layer", "fragment"),
    [(nn.Sigmoid(), "Sigmoid"), (nn.GELU(), "GELU"), (nn.LayerNorm(4), "LayerNorm")],
    ids=["sigmoid", "gelu", "layernorm"],
)
def test_convert_names_unsupported_layer(layer: nn.Module, fragment: str) -> None:
    ann = nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2))
    with pytest.raises(ConversionError, match=f"'1'.*{fragment}"):
        se.convert(ann, se.ICRate(), _loader((4,)))


def test_convert_rejects_nan_weights() -> None:
    ann = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        ann[2].weight[0, 0] = float("nan")
    with pytest.raises(ConversionError, match="'2.weight'.*NaN"):
        se.convert(ann, se.ICRate(), _loader((4,)))


def test_convert_rejects_empty_calibration() -> None:
    ann = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match="no data"):
        se.convert(ann, se.ICRate(), [])


def test_convert_rejects_a_dataset_and_names_the_loader() -> None:
    """A map-style dataset yields single samples, which would reach the model without a batch
    dimension (a confusing shape error); a DataLoader over it, or an iterable dataset, works."""
    from torch.utils.data import DataLoader, IterableDataset, TensorDataset

    ann = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    dataset = TensorDataset(torch.rand(32, 4), torch.zeros(32, dtype=torch.long))
    with pytest.raises(ConversionError, match=r"TensorDataset.*DataLoader\(dataset"):
        se.convert(ann, se.Radix(steps=4), dataset)

    class Batches(IterableDataset):
        def __iter__(self):
            return iter([torch.rand(16, 4), torch.rand(16, 4)])

    for data in (DataLoader(dataset, batch_size=8), Batches()):
        se.convert(ann, se.Radix(steps=4), data)


def test_convert_rejects_inputs_that_do_not_fit() -> None:
    ann = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match="do not fit"):
        se.convert(ann, se.ICRate(), _loader((5,)))


def test_convert_rejects_activation_as_output_and_bad_spec() -> None:
    with pytest.raises(ConversionError, match="must end in a Conv/Linear"):
        se.convert(nn.Sequential(nn.Linear(4, 2), nn.ReLU()), se.ICRate(), _loader((4,)))
    with pytest.raises(TypeError, match="neuron spec"):
        se.convert(nn.Sequential(nn.Linear(4, 2)), "icrate", _loader((4,)))  # type: ignore[arg-type]


def test_converted_network_rejects_wrong_shape_and_nan() -> None:
    network = se.convert(
        nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), se.ICRate(), _loader((4,))
    )
    with pytest.raises(ConversionError, match=r"\(B, 4\)"):
        network(torch.zeros(2, 5))
    with pytest.raises(ConversionError, match="NaN"):
        network(torch.full((2, 4), float("nan")))


def test_clip_activation_bound_is_the_scale() -> None:
    ann = nn.Sequential(nn.Linear(4, 4), se.ClipQuant(scale=0.37, trainable=False), nn.Linear(4, 2))
    spec = se.ICRate(steps=8)
    network = se.convert(ann, spec, _loader((4,)))
    assert network.stages[0].kind == "neuron"
    x = next(iter(_loader((4,))))[0]
    # the twin's hidden activation is 0.37 * clip_quant(z / 0.37): the bound, not a calibration
    hidden = clip_quant(ann[0](x) / 0.37, spec.steps, spec.default_v0 / spec.threshold) * 0.37
    with torch.no_grad():
        torch.testing.assert_close(network.twin(x), ann[2](hidden), rtol=1e-5, atol=1e-5)


def test_icrate_max_pool_gate_counts_the_max() -> None:
    generator = torch.Generator().manual_seed(1)
    spikes = (torch.rand(20, 3, 2, 4, 4, generator=generator) < 0.4).float()
    pool = nn.MaxPool2d(2)
    out = ICRateRule(se.ICRate(steps=20)).max_pool(spikes, pool)
    counts = spikes.cumsum(0)
    expected = torch.stack([pool(c) for c in counts])
    assert torch.equal(out.cumsum(0), expected)


def test_evaluate_reports_operations_and_steps(trained_ann, mnist_calibration, mnist_eval) -> None:
    loader = DataLoader(torch.utils.data.Subset(mnist_eval, range(200)), batch_size=100)
    network = se.convert(
        trained_ann, se.ICRate(steps=8), DataLoader(mnist_calibration, batch_size=250)
    )
    result = se.evaluate(network, loader, progress=False)
    assert result.samples == 200 and result.steps == 8
    assert (
        result.spikes_per_sample > 0
        and result.synaptic_events_per_sample > result.spikes_per_sample
    )
    longer = se.evaluate(network, loader, steps=16, progress=False)
    assert longer.steps == 16 and longer.spikes_per_sample > result.spikes_per_sample
    assert network.spec.steps == 8


def test_icrate_on_mnist_matches_ann_and_beats_zero_init(
    trained_ann, mnist_calibration, mnist_eval
) -> None:
    calibration = DataLoader(mnist_calibration, batch_size=250)
    evaluation = DataLoader(mnist_eval, batch_size=500)
    ann = se.evaluate(trained_ann, evaluation, progress=False).accuracy
    at32 = se.evaluate(
        se.convert(trained_ann, se.ICRate(steps=32), calibration), evaluation, progress=False
    ).accuracy
    assert at32 >= ann - 0.005
    zero = se.convert(trained_ann, se.ICRate(steps=8, init="zero", compensate=False), calibration)
    base = se.evaluate(zero, evaluation, progress=False).accuracy
    for init in ("ann", "data"):
        network = se.convert(trained_ann, se.ICRate(steps=8, init=init), calibration)
        assert se.evaluate(network, evaluation, progress=False).accuracy > base


def test_data_init_measures_per_channel_membranes(trained_ann, mnist_calibration) -> None:
    network = se.convert(
        trained_ann, se.ICRate(steps=8, init="data"), DataLoader(mnist_calibration, batch_size=250)
    )
    first = network.stages[0].neurons.v0
    assert first.shape == (16,)
    assert torch.all((first >= 0) & (first <= 1)) and not torch.all(first == 0.5)


def test_finetune_returns_clipped_twin_and_leaves_ann(trained_ann, mnist_calibration) -> None:
    before = copy.deepcopy(trained_ann.state_dict())
    loader = DataLoader(torch.utils.data.Subset(mnist_calibration, range(256)), batch_size=64)
    tuned = se.finetune(trained_ann, se.ICRate(steps=4), loader, epochs=1, progress=False)
    assert sum(isinstance(m, se.ClipQuant) for m in tuned.modules()) == 3
    for key, value in trained_ann.state_dict().items():
        assert torch.equal(value, before[key])
    network = se.convert(tuned, se.ICRate(steps=4), loader)
    assert network.stages[0].kind == "neuron"


class _CountedBatches:
    """Batches that count how often they are iterated."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches
        self.iterations = 0

    def __iter__(self):
        self.iterations += 1
        return iter(self.batches)


@pytest.mark.parametrize(
    "spec", [se.Radix(steps=4), se.Quartz(t_max=8), se.ICRate(steps=8)], ids=repr
)
def test_histograms_from_kept_values_equal_a_second_pass(
    trained_ann, mnist_eval, spec, monkeypatch
) -> None:
    """Small calibration sets are read once for the statistics: the histograms come from the
    values the first pass kept, and the converted network equals the one a second pass over the
    data gives."""
    import importlib

    convert_module = importlib.import_module("snn_encodings.conversion.convert")
    x = mnist_eval.tensors[0][:192]
    once = _CountedBatches(list(x.split(64)))
    kept = se.convert(trained_ann, spec, once)
    monkeypatch.setattr(convert_module, "KEEP_ELEMENTS", 0)
    twice = _CountedBatches(list(x.split(64)))
    streamed = se.convert(trained_ann, spec, twice)
    assert twice.iterations == once.iterations + 1  # (the first batch also gives the shapes)
    assert repr(kept) == repr(streamed)
    for a, b in zip(kept.state_dict().values(), streamed.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(kept(x[:64]), streamed(x[:64]))


@pytest.mark.parametrize("steps", [4, 8, 32])
def test_icrate_convert_is_quiet_where_the_snn_agrees_with_its_twin(
    trained_ann, mnist_calibration, steps
) -> None:
    import warnings

    x = mnist_calibration.tensors[0][:256]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the twin check finds the convnet's SNN in agreement
        se.convert(trained_ann, se.ICRate(steps=steps), [x])
