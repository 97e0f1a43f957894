r"""A converted IC-rate network evaluated in blocks of time steps.

IC-rate neurons are causal and keep one membrane each, so a window of ``T`` steps can run as
consecutive blocks: every layer takes a block of its inputs' trains, continues its scan from
the membrane the previous block left, and hands the block of its own trains on. The spikes are
those of the whole-window simulation: the same operations on every step, and the synapses of
the whole window take the same blocks of steps per call (``Rule.steps_per_call``), so even
their rounding is the same. Only a block of each layer's trains is held at a time, which bounds
the memory of an evaluation by :data:`BLOCK_ELEMENTS` instead of ``T`` times the widest layer
and keeps more of the working set of consecutive layers in cache. Max-pooling gates on spike
counts before each step, so the counts of its inputs are carried from block to block; the
output layer is decoded from its counts and last membrane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from snn_encodings.coding.icrate import decode_icrate_count
from snn_encodings.conversion.trains import currents, drop_read
from snn_encodings.functional.icrate import ICRateState, SignedICRateState

if TYPE_CHECKING:
    from snn_encodings.conversion.network import SpikingNetwork

__all__ = ["BLOCK_ELEMENTS", "icrate_forward_in_blocks", "time_block"]

BLOCK_ELEMENTS = 2**20
"""Most entries of the widest layer's currents (block steps x batch x neurons) per block: 4 MiB
in float32. On the demo convnet (128 images, T=8) one evaluation's peak memory was 16 MiB for
the whole window and 10 MiB in blocks of this size, at the same speed; much smaller blocks
cost more calls per layer than they save (1-step blocks took 1.4 times as long)."""


def time_block(steps: int, batch: int, widest: int) -> int:
    """Steps per block for a window of ``steps`` steps, ``batch`` samples and ``widest``
    neurons in the widest layer (per sample): the window split into as few blocks of equal
    length as keep each within :data:`BLOCK_ELEMENTS` (one step at least)."""
    blocks = min(steps, max(1, -(-steps * batch * widest // BLOCK_ELEMENTS)))
    return -(-steps // blocks)


def icrate_forward_in_blocks(network: SpikingNetwork, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The window of ``network`` (an IC-rate network) on checked inputs ``x`` ``(B, *)``, in
    blocks of :func:`time_block` steps.

    Returns the decoded output (before the output scale) and, while the network counts, every
    node's spike counts (else an empty list), as the simulation gives them; sets every neuron
    layer's ``last_state`` as the simulation does.
    """
    rule = network.rule
    spec = rule.spec
    steps = spec.steps
    stages = network.stages
    trains = rule.encode_input(x)
    block = time_block(steps, x.shape[0], network.widest)
    last_use = network.last_use()
    pooled = {stage.source for stage in stages if stage.kind == "pool"}
    output = len(stages)
    kept = {*pooled, output, *(range(1, output) if network.counting else ())}
    signed = spec.signed
    counts: dict[int, Tensor] = {}  # spikes of either sign, what counting reports
    net: Tensor | None = None  # the output layer's net count (signed neurons)
    states: dict[int, ICRateState | SignedICRateState] = {}
    for start in range(0, steps, block):
        length = min(block, steps - start)
        sequences: list[Tensor | None] = [trains[start : start + length]]
        fresh = {0: sequences[0].sum(0)} if 0 in kept else {}
        for index, stage in enumerate(stages, start=1):
            if stage.kind == "pool":
                spikes = rule.max_pool(
                    sequences[stage.source], stage.pool, counts_before=counts.get(stage.source)
                )
            else:
                synapse, neurons = stage.synapse, stage.neurons
                inputs = currents(synapse, sequences, rule, length, block)
                drop_read(sequences, stage.inputs, last_use, index)
                if index not in states:
                    states[index] = neurons.initial_state(inputs[0])
                spikes, states[index] = neurons.scan(inputs, states[index])
                del inputs
            if index in kept:
                fresh[index] = spikes.abs().sum(0) if signed else spikes.sum(0)
            if signed and index == output:
                net = spikes.sum(0) if net is None else net + spikes.sum(0)
            sequences.append(spikes)
            drop_read(sequences, stage.inputs, last_use, index)
            del spikes
        del sequences
        for node, count in fresh.items():  # after the block: max-pools read counts before it
            counts[node] = counts[node] + count if node in counts else count
    for index, state in states.items():
        stages[index - 1].neurons.last_state = state
    last = stages[-1].neurons
    final = counts[output] if net is None else net
    result = decode_icrate_count(
        final, steps, spec, v_final=states[output].v, v0=last.initial_v(final)
    )
    spikes = []
    if network.counting:  # the input's over the whole window: analog currents, whose block
        # sums would round differently
        spikes = [trains.abs().sum(0), *(counts[node] for node in range(1, output + 1))]
    return result, spikes
