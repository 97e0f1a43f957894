"""``Synapse.drive`` reuses its own intermediate tensors but never writes into a spike train it
reads: an identity branch with unit gains hands back its source itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snn_encodings.conversion.graph import Branch
from snn_encodings.conversion.synapse import Synapse


def _residual_synapse(identity_first: bool) -> tuple[Synapse, nn.Linear]:
    torch.manual_seed(0)
    linear = nn.Linear(3, 3, bias=False)
    branches = [Branch(0, []), Branch(1, [linear])]
    if not identity_first:
        branches.reverse()
    ones = torch.ones(())
    shapes = [torch.Size([3]), torch.Size([3])]
    return Synapse(branches, torch.zeros(3), [ones, ones], ones, shapes), linear


@pytest.mark.parametrize("identity_first", [True, False])
@pytest.mark.parametrize("as_mapping", [False, True])
def test_drive_leaves_the_source_trains_untouched(identity_first: bool, as_mapping: bool) -> None:
    synapse, linear = _residual_synapse(identity_first)
    generator = torch.Generator().manual_seed(1)
    trains = [(torch.rand(4, 2, 3, generator=generator) < 0.5).float() for _ in range(2)]
    before = [t.clone() for t in trains]
    sequences = dict(enumerate(trains)) if as_mapping else trains
    with torch.no_grad():
        currents = synapse.drive(sequences, event_driven=False)
        expected = before[0] + linear(before[1])
    assert torch.equal(currents, expected)
    assert all(torch.equal(t, b) for t, b in zip(trains, before))
