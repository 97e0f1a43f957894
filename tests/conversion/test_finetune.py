"""Fine-tuning: starts from calibration, keeps the best validation epoch, gains at low T."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import snn_encodings as se
from snn_encodings.conversion.finetune import with_twin_activations
from snn_encodings.conversion.rules.base import rule_for


def _accuracy(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _validation(mnist_eval: TensorDataset, size: int = 400) -> TensorDataset:
    return TensorDataset(*(t[:size] for t in mnist_eval.tensors))


def test_finetune_never_returns_a_worse_model_on_validation(trained_ann, mnist_calibration, mnist_eval):
    spec = se.Radix(steps=6)
    validation = _validation(mnist_eval)
    data = Subset(mnist_calibration, range(256))
    loader = DataLoader(data, batch_size=64, shuffle=True)
    tuned = se.finetune(
        trained_ann, spec, loader, validation=DataLoader(validation, batch_size=250),
        epochs=1, lr=1.0, progress=False,
    )  # a learning rate that wrecks the weights: every epoch is worse than the start
    result = tuned.finetune_result
    assert result.epochs and max(result.epochs) < result.start
    assert result.best_epoch == 0 and result.best == result.start
    grid = rule_for(spec).decode_input
    start = with_twin_activations(trained_ann, spec, loader)
    x, y = validation.tensors
    with torch.no_grad():
        assert torch.equal(tuned(grid(x)).argmax(1), start(grid(x)).argmax(1))
        assert int((tuned(grid(x)).argmax(1) == y).sum()) / len(y) == result.start


def test_finetune_gains_at_low_radix_steps_and_keeps_batchnorm_statistics(
    trained_ann, mnist_calibration, mnist_eval
):
    spec = se.Radix(steps=3)
    validation = _validation(mnist_eval)
    calibration = DataLoader(mnist_calibration, batch_size=250)
    loader = DataLoader(mnist_calibration, batch_size=50, shuffle=True)
    tuned = se.finetune(
        trained_ann, spec, loader, validation=DataLoader(validation, batch_size=250),
        epochs=1, progress=False,
    )
    result = tuned.finetune_result
    assert result.best_epoch == 1 and result.best > result.start + 0.01
    before = _accuracy(se.convert(trained_ann, spec, calibration).twin, validation)
    after = _accuracy(se.convert(tuned, spec, calibration).twin, validation)
    assert after > before + 0.01
    for name, value in trained_ann.state_dict().items():
        if "running" in name:
            assert torch.equal(tuned.state_dict()[name], value), name


def test_finetune_holds_out_every_tenth_sample_without_a_validation_loader(
    trained_ann, mnist_calibration
):
    data = Subset(mnist_calibration, range(200))
    tuned = se.finetune(
        trained_ann, se.ICRate(steps=8), DataLoader(data, batch_size=50), epochs=1, progress=False
    )
    held = TensorDataset(*(t[9:200:10] for t in mnist_calibration.tensors))
    grid = rule_for(se.ICRate(steps=8)).decode_input
    x, y = held.tensors
    with torch.no_grad():
        accuracy = int((tuned(grid(x)).argmax(1) == y).sum()) / len(y)
    assert accuracy == tuned.finetune_result.best
