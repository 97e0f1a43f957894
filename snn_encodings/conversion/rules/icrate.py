"""Conversion hooks of the IC-rate encoding."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from snn_encodings.coding.icrate import decode_icrate, encode_icrate
from snn_encodings.collective import active_collective
from snn_encodings.conversion.calibrate import iterate_inputs
from snn_encodings.conversion.icrate_fast import icrate_forward_in_blocks, time_block
from snn_encodings.conversion.rules.base import FastPass, NeuronLayer, Rule, rule_for
from snn_encodings.errors import SnnEncodingsWarning
from snn_encodings.functional.channels import channel_view
from snn_encodings.functional.icrate import (
    ICRateState,
    SignedICRateState,
    icrate_initial_state,
)
from snn_encodings.specs.icrate import ICRate

__all__ = ["ICRateLayer", "ICRateRule"]

#: Samples of the calibration data used to measure initial membranes (IC-SNN Algorithm 2).
DATA_INIT_SAMPLES = 512

#: Calibration samples on which ``convert`` compares a plain IC-rate SNN's decisions with its
#: twin's: the SNN's window on them costs 16 T samples' ANN passes (at T = 8, half an ANN pass
#: over a 256-sample calibration set).
CHECK_SAMPLES = 16

#: Below this fraction of agreeing decisions ``convert`` tries signed neurons (with
#: ``signed=None``) or warns. On the zoo's trained
#: ``resnet_mnist`` 8 of 16 agree at T = 32 and 11 at T = 16 (SNN 60 % and 78 %, twins 96 %),
#: 14 at T = 8 (SNN 88.6 %, twin 92.1 %: no warning); on the demo convnet all 16 at T = 4-32.
CHECK_AGREEMENT = 0.75


class ICRateLayer(NeuronLayer):
    """A layer of IC-rate neurons over a time window: currents ``(T, B, *)`` -> spikes.

    Runs :func:`~snn_encodings.functional.simulate` with the layer's initial membrane ``v0``
    (a buffer: a scalar, or one value per channel after IC-SNN Algorithm 2); no alignment
    hooks (see :class:`~snn_encodings.conversion.rules.base.NeuronLayer`). Set ``surrogate``
    (e.g. :func:`~snn_encodings.functional.surrogate.fast_sigmoid`) to train the converted network
    with surrogate gradients; the spikes stay exact. The neuron state lives only within a forward
    call (``last_state`` is a plain attribute, not a buffer).
    """

    def __init__(self, spec: ICRate, output: bool = False) -> None:
        super().__init__(spec, output=output)
        self.register_buffer("v0", torch.tensor(spec.default_v0))
        self.last_state: ICRateState | SignedICRateState | None = None

    def initial_v(self, like: Tensor) -> Tensor:
        """``v0`` broadcast to one step's shape ``(B, *)``."""
        v0 = channel_view(self.v0, like.dim() - 1)
        return torch.zeros_like(like) + v0.to(like.dtype)

    def initial_state(self, like: Tensor) -> ICRateState | SignedICRateState:
        """The state a window starts from, for one step's shape ``like`` ``(B, *)``."""
        return icrate_initial_state(
            self.spec, like, v0=channel_view(self.v0, like.dim() - 1).to(like.dtype)
        )

    def run(self, currents: Tensor) -> tuple[Tensor, ICRateState | SignedICRateState]:
        r"""The step loop; without a gradient to carry, an in-place scan over the ``(T, B, *)``
        block (the same operations as :func:`~snn_encodings.functional.icrate.icrate_step`:
        :math:`v \leftarrow v + I_t`, :math:`s_t = [v \ge \theta]` (minus a take-back spike
        for signed neurons), :math:`v \leftarrow v - \theta s_t`, so spikes and state are
        bit for bit equal)."""
        if self.surrogate is not None or (torch.is_grad_enabled() and currents.requires_grad):
            return super().run(currents)
        return self.scan(currents, self.initial_state(currents[0]))

    def scan(
        self, currents: Tensor, state: ICRateState | SignedICRateState
    ) -> tuple[Tensor, ICRateState | SignedICRateState]:
        """The in-place scan of :meth:`run` over currents ``(T, B, *)`` from ``state`` (whose
        tensors it updates in place): ``(spikes, state)``. Without gradients; a window run in
        consecutive parts, each continuing from the last state, gives the same spikes."""
        theta = self.spec.threshold
        v = state.v
        count = state.count if isinstance(state, SignedICRateState) else None
        spikes = torch.empty_like(currents)
        if count is not None:  # signed: take a spike back below zero (0/1 masks, no copies)
            back, fired = torch.empty_like(v), torch.empty_like(v)
        for current, out in zip(currents, spikes):
            v.add_(current)
            torch.ge(v, theta, out=out)  # written as 0/1 in the spikes' dtype
            if count is not None:
                torch.lt(v, 0, out=back)
                torch.gt(count, 0, out=fired)
                out.sub_(back.mul_(fired))
                count.add_(out)
            v.sub_(out, alpha=theta)
        return spikes, state


class ICRateRule(Rule):
    """IC-rate: IF neurons with reset by subtraction, initial membrane, compensated readout.

    - Twin: the QCFS-style quantised clip :math:`\\mathrm{clip}(\\lfloor Tz + v_0/\\theta
      \\rfloor / T, 0, 1)`, which the neuron reproduces exactly for a constant input current; in
      deeper layers the input is a spike train, so the SNN matches the twin only within the rate
      bound (the benchmark measures it).
    - Bias: added every step. Input: analog current or sigma-delta spikes.
    - Max-pooling: the gate passes, at each step, the spike of an input whose count before this
      step is the window's highest (ties prefer a unit spiking now). The output therefore spikes
      exactly when the window's maximum count grows, so its count equals the maximum of the
      input counts at every step: the value-domain max of the rates.
    - ``init="data"``: :meth:`finalize` measures the mean residual membrane per channel on
      calibration data, layer by layer (IC-SNN Algorithm 2, reconstructed). In a distributed
      conversion each process measures ``DATA_INIT_SAMPLES / world_size`` samples (rounded up)
      of its shard and the per-channel sums and counts are added over the processes, so the
      result is the sample-weighted mean over all of them. One pass of the network measures
      every layer (each layer measures with ``v0 = 0``, then reruns with its new ``v0``).
    """

    spec: ICRate
    sparse_in_time = False

    @property
    def supports_max_pool(self) -> bool:  # type: ignore[override]
        """Max-pooling gates spikes by their counts, which a take-back spike would undo for
        one input but not for the window's output: unsigned neurons only."""
        return not self.spec.signed

    def twin_parameters(self) -> tuple[int | None, float, float]:
        return self.spec.steps, self.spec.default_v0 / self.spec.threshold, 1.0

    def twin_output(self, z: Tensor) -> Tensor:
        if self.spec.compensate:
            return z
        return z.clamp(0, 1)

    def calibration_percentile(self) -> float | None:
        return 99.99

    def encode_input(self, x: Tensor) -> Tensor:
        return encode_icrate(x, self.spec)

    def decode_input(self, x: Tensor) -> Tensor:
        if self.spec.input_coding == "sigma_delta":
            return encode_icrate(x, self.spec).mean(0)
        return x

    def bias_currents(self, bias: Tensor, steps: int) -> Tensor:
        return bias.unsqueeze(0).expand(steps, *bias.shape)

    def neuron_layer(self, output: bool) -> nn.Module:
        return ICRateLayer(self.spec, output)

    def decode_output(self, spikes: Tensor, layer: nn.Module) -> Tensor:
        state = layer.last_state
        return decode_icrate(spikes, self.spec, v_final=state.v, v0=layer.initial_v(spikes[0]))

    def max_pool(
        self, spikes: Tensor, pool: nn.Module, counts_before: Tensor | None = None
    ) -> Tensor:
        """Max-pooling of spike trains ``(T, B, C, *)``; ``counts_before`` ``(B, C, *)``: the
        inputs' spike counts before the first of these steps (a window run in parts)."""
        steps, batch = spikes.shape[:2]
        before = spikes.cumsum(0) - spikes
        if counts_before is not None:
            before += counts_before
        key = 2 * before + spikes
        pooled = pool(key.flatten(0, 1)).unflatten(0, (steps, batch))
        return torch.remainder(pooled, 2)

    def steps_per_call(self, batch: int, widest: int) -> int | None:
        return time_block(self.spec.steps, batch, widest)

    def fast_forward(self, network: nn.Module, x: Tensor) -> FastPass | None:
        """The window in blocks of time steps (:mod:`~snn_encodings.conversion.icrate_fast`):
        the simulation's spikes with a block of every layer's trains in memory. Without
        gradients only (no surrogate, no parameter asking for one), and while no neuron layer
        has forward hooks (which expect its call on the whole window); otherwise ``None``."""
        layers = [m for m in network.modules() if isinstance(m, ICRateLayer)]
        wants_grad = torch.is_grad_enabled() and any(p.requires_grad for p in network.parameters())
        hooked = any(layer._forward_hooks or layer._forward_pre_hooks for layer in layers)
        if wants_grad or hooked or any(layer.surrogate is not None for layer in layers):
            return None
        output, spikes = icrate_forward_in_blocks(network, x)  # type: ignore[arg-type]
        return FastPass(output=output, spikes=spikes)

    def finalize(self, network: nn.Module, calibration: Any) -> None:
        """Measure initial membranes (``init="data"``), then, with ``compensate``, compare
        plain neurons' decisions with the twin's on :data:`CHECK_SAMPLES` calibration inputs.

        Where fewer than :data:`CHECK_AGREEMENT` of them agree, a network with
        ``signed=None`` and no max-pooling is run with signed neurons and keeps them if more
        agree (its spec then reads ``signed=True``); a plain network that still agrees on
        too few warns. Only with ``compensate``: its readout is the output layer's exact mean
        input, so decisions that differ come from the hidden layers' spike timing (without
        it they also differ by the readout's rounding to T levels, which signed neurons do
        not change)."""
        spec = self.spec
        check = spec.compensate and not spec.signed
        if spec.init != "data" and not check:
            return
        collective = active_collective()
        limit = CHECK_SAMPLES
        if spec.init == "data":
            limit = max(limit, -(-DATA_INIT_SAMPLES // collective.world_size))
        inputs = []
        seen = 0
        for x in iterate_inputs(calibration, f"convert ({spec!r})"):
            inputs.append(x)
            seen += len(x)
            if seen >= limit:
                break
        x = torch.cat(inputs)[:limit].to(network.output_scale.device, network.output_scale.dtype)
        with torch.no_grad():
            if spec.init == "data":
                self._measure_initial_membranes(network, x, collective.sum)
            if not check:
                return
            sample = x[:CHECK_SAMPLES]
            decisions = network.twin(sample).argmax(-1)  # type: ignore[operator]
            agreement = _agreement(network, sample, decisions)
            if agreement is None or agreement >= CHECK_AGREEMENT:
                return
            pools = any(stage.kind == "pool" for stage in network.stages)
            if spec.signed is None and not pools:
                _use_spec(network, dataclasses.replace(spec, signed=True))
                signed = _agreement(network, sample, decisions)
                if signed is not None and signed > agreement:
                    if spec.init == "data":  # the residuals of the neurons it keeps
                        network.rule._measure_initial_membranes(network, x, collective.sum)
                    return
                _use_spec(network, spec)
        self._warn(agreement, pools)

    def _measure_initial_membranes(
        self, network: nn.Module, x: Tensor, merge: Callable[[Tensor], Tensor]
    ) -> None:
        layers = [stage.neurons for stage in network.stages if stage.kind == "neuron"]
        for layer in layers:
            layer.v0 = torch.zeros((), dtype=layer.v0.dtype, device=layer.v0.device)

        def measure(layer: nn.Module, inputs: tuple[Tensor], _: Tensor) -> Tensor:
            # the residual with v0 = 0 and every earlier layer initialised; then the layer
            # runs again with its own v0, so the later layers see what they will see
            handles.pop(layer).remove()
            layer.v0 = mean_residual(layer.last_state.v, self.spec.threshold, merge=merge).to(
                layer.v0.dtype
            )
            return layer(inputs[0])

        handles = {layer: layer.register_forward_hook(measure) for layer in layers}
        fast, network.use_fast_path = network.use_fast_path, False  # the layers' own calls
        try:
            network(x)  # one pass measures every layer in order
        finally:
            network.use_fast_path = fast
            for handle in handles.values():
                handle.remove()

    def _warn(self, agreement: float, pools: bool) -> None:
        """Warn that plain neurons' decisions agree with the twin's on only ``agreement`` of
        the checked calibration inputs: they cannot take back spikes fired on an early burst
        of current, which BatchNorm and residual networks produce."""
        if pools:
            instead = (
                "a longer window, or an exact encoding (Radix, Quartz): signed neurons do not "
                "support its max-pooling"
            )
        elif self.spec.signed is None:
            instead = (
                "a longer window, or an exact encoding (Radix, Quartz): signed neurons did no "
                "better"
            )
        else:
            instead = "ICRate(signed=True), whose neurons can take a spike back"
        warnings.warn(
            f"convert ({self.spec!r}): the SNN's decisions agree with its twin's on only "
            f"{agreement:.0%} of the calibration inputs checked; plain IC-rate neurons cannot "
            "take back spikes fired on an early burst of current (BatchNorm and residual "
            f"networks send such bursts). Use {instead}",
            SnnEncodingsWarning,
            stacklevel=4,
        )


def _agreement(network: nn.Module, x: Tensor, decisions: Tensor) -> float | None:
    """The fraction of inputs ``x`` on which ``network`` decides as ``decisions`` (the twin's),
    over every process of a distributed conversion (so that all of them choose alike), or
    ``None`` for outputs that are not class scores ``(B, classes >= 2)``."""
    snn = network(x)
    if snn.dim() != 2 or snn.shape[1] < 2:
        return None
    agree = (snn.argmax(1) == decisions).sum()
    counts = torch.stack([agree, agree.new_tensor(len(x))]).to(torch.float64)
    agreed, total = active_collective().sum(counts).tolist()
    return agreed / total


def _use_spec(network: nn.Module, spec: ICRate) -> None:
    """Run ``network``'s stages with ``spec``, which differs from its own only in ``signed``
    (a setting of the neurons alone: synapses, scales and initial membranes stay)."""
    network.spec = spec
    network.rule = rule_for(spec)
    for module in network.modules():
        if isinstance(module, ICRateLayer):
            module.spec = spec


def mean_residual(
    v: Tensor, threshold: float, merge: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """Per-channel mean of the non-negative residual membranes ``v`` ``(B, C, *)``, shape ``(C,)``.

    Neurons driven below zero carry no rate information and are left out; a channel with no
    such neuron gets :math:`\theta/2`. Sums and counts are taken in float64 and passed through
    ``merge`` (e.g. a sum over processes) before dividing, so merged shards give the
    sample-weighted mean.
    """
    rows = v.transpose(0, 1).reshape(v.shape[1], -1).to(torch.float64)
    mask = rows >= 0
    sums = torch.cat(
        [torch.where(mask, rows, torch.zeros_like(rows)).sum(1), mask.sum(1).to(torch.float64)]
    )
    total, count = (sums if merge is None else merge(sums)).chunk(2)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, threshold / 2))
    return mean.clamp(0, threshold)
