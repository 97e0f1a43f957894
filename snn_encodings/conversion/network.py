"""The converted spiking network and its ANN twin, evaluated over the same graph."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from snn_encodings.conversion.exactness import (
    LayerBound,
    SplitSynapse,
    exact_dtype,
    layer_bound,
    split_parts,
)
from snn_encodings.conversion.rules.base import Rule, rule_for
from snn_encodings.conversion.synapse import Synapse
from snn_encodings.conversion.trains import currents, drop_read
from snn_encodings.errors import ConversionError, SnnEncodingsWarning
from snn_encodings.functional.channels import channel_view
from snn_encodings.functional.finite import all_finite
from snn_encodings.specs.base import Spec

__all__ = ["LayerCounts", "SpikingNetwork", "Stage"]


class Stage(nn.Module):
    """One value node of a converted network: a spiking layer, a max-pooling or the output.

    Attributes:
        kind: ``"neuron"``, ``"pool"`` or ``"output"``.
        name: the ANN's name of the layer it replaces.
        synapse: its :class:`Synapse` (neuron and output stages).
        neurons: the encoding's neuron layer (neuron and output stages).
        pool: the max-pooling module (pool stages); ``source`` is its input node.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        synapse: Synapse | None = None,
        neurons: nn.Module | None = None,
        pool: nn.Module | None = None,
        source: int = 0,
        shape: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.kind = kind
        self.name = name
        self.synapse = synapse
        self.neurons = neurons
        self.pool = pool
        self.source = source
        self.shape = shape
        #: Narrowest float this stage's sums are exact in, and whether its weights split into
        #: two float32 parts (set by ``SpikingNetwork.exact_dtypes``).
        self.exact_dtype: torch.dtype | None = None
        self.split = False

    @property
    def inputs(self) -> list[int]:
        """The value nodes this stage reads: its pool's source, or its synapse's sources."""
        if self.kind == "pool":
            return [self.source]
        assert self.synapse is not None
        return list(self.synapse.sources)

    def extra_repr(self) -> str:
        text = f"kind={self.kind!r}, name={self.name!r}, shape={self.shape}"
        if self.exact_dtype is not None:
            text += f", exact_dtype={self.exact_dtype}"
            text += " (two float32 parts)" if self.split else ""
        chosen = getattr(self, "calibration", None)
        return text if chosen is None else f"{text}, calibration={chosen}"


@dataclass
class LayerCounts:
    """Per-layer totals accumulated while ``SpikingNetwork.counting`` is on.

    Attributes:
        name: the layer's name; ``neurons``: neurons per sample; ``spikes``: spikes emitted;
        ``synaptic_events``: synaptic operations caused by the spikes arriving at the layer;
        ``samples``: samples seen.
    """

    name: str
    neurons: int
    spikes: float = 0.0
    synaptic_events: float = 0.0
    samples: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class SpikingNetwork(nn.Module):
    """A spiking network converted from an ANN for one encoding ``spec``.

    Calling it on inputs ``(B, *)`` (values in the range the ANN was trained on, e.g. pixels in
    [0, 1]) encodes them, simulates every layer over the encoding's time window and returns the
    decoded outputs ``(B, K)`` in the ANN's logit units. :meth:`twin` evaluates the ANN twin on
    the same graph and weights: the SNN reproduces it (exactly for radix and Quartz).

    With a spec whose ``float_first_layer`` is set (Quartz), the first layer is computed in
    float on the raw inputs (any finite values, e.g. standardised images) and its activation,
    rounded to the encoding's grid as in the twin, is encoded as the first spike trains; its
    multiply-accumulates are not synaptic events and its neurons are not simulated.

    Built by :func:`snn_encodings.convert`; not meant to be constructed by hand.

    Raises:
        ConversionError: with ``float_first_layer`` when the first layer is not a hidden layer
            fed by the input alone, or when a later layer also reads the input.
    """

    def __init__(
        self,
        spec: Spec,
        stages: list[Stage],
        output_scale: Tensor,
        input_shape: tuple[int, ...],
        *,
        output_offset: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.rule: Rule = rule_for(spec)
        self.stages = nn.ModuleList(stages)
        self.register_buffer("output_scale", output_scale.clone())
        #: Logit units subtracted after decoding (see :mod:`snn_encodings.conversion.output`).
        self.register_buffer(
            "output_offset",
            torch.zeros(()) if output_offset is None else output_offset.detach().clone(),
        )
        self.input_shape = input_shape
        #: The first stage runs in float on the raw input (``spec.float_first_layer``).
        self.float_first = bool(getattr(spec, "float_first_layer", False))
        if self.float_first:
            self._check_float_first()
        pools = [stage.name for stage in stages if stage.kind == "pool"]
        if pools and not self.rule.supports_max_pool:
            raise ConversionError(
                f"SpikingNetwork: {spec!r} does not support max-pooling (layer {pools[0]!r}); "
                "replace it by average pooling or use another encoding"
            )
        self.counting = False
        #: Let the rule evaluate in closed form when it can (same outputs); views that record
        #: every layer's spike trains (e.g. the snnTorch adapter) turn it off.
        self.use_fast_path = True
        self.counts: list[LayerCounts] = []
        self.reset_counts()
        self._dtypes: list[torch.dtype | None] | None = None
        self._narrow: dict[int, nn.Module] = {}

    def _check_float_first(self) -> None:
        stages = list(self.stages)
        first = stages[0] if stages else None
        if first is None or first.kind != "neuron" or first.inputs != [0]:
            raise ConversionError(
                "SpikingNetwork: float_first_layer needs a hidden layer (with its ReLU) fed by "
                "the input alone as the first layer"
            )
        for stage in stages[1:]:
            if 0 in stage.inputs:
                raise ConversionError(
                    f"SpikingNetwork: with float_first_layer only the first layer may read the "
                    f"input, but {stage.name!r} does too"
                )

    def first_values(self, x: Tensor) -> list[Tensor]:
        """Twin values of the nodes the spiking simulation starts from, for checked inputs.

        ``[decode_input(x)]``, or with ``float_first`` ``[x, twin(first layer(x))]``: the raw
        input and the float first layer's activation on the encoding's grid.
        """
        rule = self.rule
        if not self.float_first:
            return [rule.decode_input(x)]
        return [x, rule.twin(self.stages[0].synapse.value([x]))]

    # --- bookkeeping -------------------------------------------------------------------------
    def reset_counts(self) -> None:
        """Zero the per-layer spike and synaptic-event counters."""
        self.counts = [
            LayerCounts(name="input", neurons=int(torch.tensor(self.input_shape).prod()))
        ]
        for stage in self.stages:
            self.counts.append(
                LayerCounts(name=stage.name, neurons=int(torch.tensor(stage.shape).prod()))
            )

    @property
    def spiking_depth(self) -> int:
        """Number of neuron layers on the longest path from input to output (output included)."""
        depth = [0]
        for index, stage in enumerate(self.stages):
            if index == 0 and self.float_first:
                depth.append(0)  # computed in float: its output is the first spike train
            elif stage.kind == "pool":
                depth.append(depth[stage.source])
            else:
                assert stage.synapse is not None
                depth.append(1 + max(depth[s] for s in stage.synapse.sources))
        return depth[-1]

    def _bound(self, synapse: nn.Module) -> LayerBound:
        """The grid and magnitude bound of ``synapse``'s sums in the rule's exact units."""
        units = self.rule.sum_units()
        assert units is not None
        shapes = [torch.Size(self.input_shape)] + [torch.Size(s.shape) for s in self.stages]
        source_max, bias_scale, margin = units
        bias_map = synapse.bias
        bias = float(bias_map.abs().max()) * bias_scale if bias_map.numel() else 0.0
        return layer_bound(synapse, shapes, [source_max] * len(shapes), bias + margin)

    def layer_bounds(self) -> list[LayerBound | None]:
        """Per stage, the grid and magnitude of its sums (``None``: a pool, the float first
        layer, or an encoding that claims no exactness); see
        :mod:`~snn_encodings.conversion.exactness`."""
        unclaimed = self.rule.sum_units() is None
        return [
            None
            if unclaimed or stage.synapse is None or (index == 0 and self.float_first)
            else self._bound(stage.synapse)
            for index, stage in enumerate(self.stages)
        ]

    def exact_dtypes(self) -> list[torch.dtype | None]:
        """Per stage, the narrowest float its sums are exact in: float32 where the layer's bound
        fits 24 significand bits, float64 where it fits 53, ``None`` for pools, the float first
        layer, layers exact in neither, and encodings that claim no exactness.

        A float64 layer whose weights split into two parts that are each exact in float32
        (:func:`~snn_encodings.conversion.exactness.split_parts`) is evaluated by the
        closed forms as two float32 passes added in float64 (``Stage.split``). Computed from
        the weights on first use (``convert`` calls it) and kept; shown in each stage's repr.
        """
        if self._dtypes is None:
            self._choose_dtypes(self.layer_bounds())
        assert self._dtypes is not None
        return self._dtypes

    def _choose_dtypes(self, bounds: list[LayerBound | None]) -> None:
        self._dtypes = [None if bound is None else exact_dtype(bound) for bound in bounds]
        self._narrow.clear()
        for index, (stage, dtype) in enumerate(zip(self.stages, self._dtypes)):
            stage.exact_dtype, stage.split = dtype, False
            if dtype != torch.float64:
                continue
            parts = split_parts(stage.synapse)
            if parts and all(exact_dtype(self._bound(p)) == torch.float32 for p in parts):
                self._narrow[index] = SplitSynapse(*parts)
                stage.split = True

    def narrow_synapse(self, index: int) -> nn.Module:
        """Stage ``index``'s synapse as the closed forms evaluate it: a float32 copy where
        float32 is exact, a :class:`SplitSynapse` where two float32 parts are, else the synapse
        itself (both copies follow the synapse's device)."""
        synapse = self.stages[index].synapse
        assert synapse is not None
        dtype = self.exact_dtypes()[index]
        narrow = self._narrow.get(index)
        if narrow is None and dtype == torch.float32:
            narrow = copy.deepcopy(synapse).to(torch.float32)
            self._narrow[index] = narrow
        if narrow is None:
            return synapse
        device = narrow.high.bias.device if isinstance(narrow, SplitSynapse) else narrow.bias.device
        if device != synapse.bias.device:
            narrow.to(synapse.bias.device)
        return narrow

    def check_exactness(self) -> None:
        """Warn, naming the layer, where a layer's sums may not be exact in float64 (so the
        network may differ from its twin); called by ``convert`` for radix and Quartz."""
        bounds = self.layer_bounds()
        self._choose_dtypes(bounds)
        for stage, bound, dtype in zip(self.stages, bounds, self.exact_dtypes()):
            if bound is None or dtype is not None:
                continue
            reason = (
                "an average pooling whose window is not a power of two"
                if bound.grid_bits is None
                else f"{bound.bits:.1f} significand bits (float64 has 53)"
            )
            warnings.warn(
                f"convert: layer {stage.name!r} of {self.spec!r} is not exact against its twin: "
                f"its sums need {reason}; use power-of-two pooling windows or fewer weight bits",
                SnnEncodingsWarning,
                stacklevel=3,
            )

    @property
    def latency(self) -> int:
        """Steps from the first input step to the end of the output window."""
        return self.spiking_depth * self.spec.layer_latency + self.spec.steps_per_layer

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ConversionError(
                f"SpikingNetwork: expected a floating-point tensor, got {type(x).__name__}"
            )
        if tuple(x.shape[1:]) != self.input_shape:
            raise ConversionError(
                "SpikingNetwork: expected inputs of shape (B, "
                f"{', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if not all_finite(x):
            raise ConversionError("SpikingNetwork: the input contains NaN or inf")
        return x.to(self.output_scale.dtype)

    # --- spiking simulation --------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Simulate the SNN on inputs ``(B, *)``; return decoded outputs ``(B, K)``."""
        x = self._check_input(x)
        rule = self.rule
        fast = rule.fast_forward(self, x) if self.use_fast_path else None
        if fast is not None:
            if self.counting:
                counts = [spikes.to(fast.output.dtype) for spikes in fast.spikes]
                for index, stage in enumerate([None, *self.stages]):
                    self._count_totals(index, counts[: index + 1], stage)
            scale = channel_view(self.output_scale, fast.output.dim() - 1)
            return fast.output * scale - self.output_offset
        # the first spike trains: the encoded input, or the float first layer's encoded output
        start = self.first_values(x) if self.float_first else [x]
        spikes = rule.encode_input(start[-1])
        sequences: list[Tensor | None] = [None] * (len(start) - 1) + [spikes]
        steps = spikes.shape[0]
        # per-neuron spike counts of every node, each computed once (only while counting)
        counts: list[Tensor | None] = []
        if self.float_first and self.counting:
            counts.append(torch.zeros_like(x))  # the raw input sends no spikes
            self._count_totals(0, counts, None)
        self._count(spikes, None, counts)
        last_use = self.last_use()
        output = None
        for index, stage in enumerate(self.stages, start=1):
            if index < len(start):
                continue
            if stage.kind == "pool":
                spikes = rule.max_pool(sequences[stage.source], stage.pool)
            else:
                synapse, neurons = stage.synapse, stage.neurons
                per_call = rule.steps_per_call(x.shape[0], self.widest)
                inputs = currents(synapse, sequences, rule, steps, per_call)
                drop_read(sequences, stage.inputs, last_use, index)
                del spikes  # the previous node's trains: released here if nothing reads them
                spikes = neurons(inputs)
                del inputs
                if stage.kind == "output":
                    output = (
                        rule.decode_output(spikes, neurons)
                        * channel_view(self.output_scale, spikes[0].dim() - 1)
                        - self.output_offset
                    )
            self._count(spikes, stage, counts)
            sequences.append(spikes)
            drop_read(sequences, stage.inputs, last_use, index)
        assert output is not None
        return output

    @property
    def widest(self) -> int:
        """Neurons per sample of the widest stage."""
        return max(math.prod(stage.shape) for stage in self.stages)

    def last_use(self) -> dict[int, int]:
        """The last stage (1-based node index) reading each node: its trains are dropped after it."""
        return {
            source: index
            for index, stage in enumerate(self.stages, start=1)
            for source in stage.inputs
        }

    def _count(self, spikes: Tensor, stage: Stage | None, counts: list[Tensor | None]) -> None:
        """Append the next node's per-neuron spike counts to ``counts`` and add its totals."""
        if not self.counting:
            return
        counts.append(spikes.detach().abs().sum(0))
        self._count_totals(len(counts) - 1, counts, stage)

    def _count_totals(
        self, index: int, per_neuron: list[Tensor | None], stage: Stage | None
    ) -> None:
        """Add node ``index``'s spikes and synaptic events from per-neuron spike counts (``None``
        for a node without spike trains: the raw input of a float first layer)."""
        counts = self.counts[index]
        own = per_neuron[index]
        assert own is not None
        counts.samples += own.shape[0]
        counts.spikes += float(own.sum())
        if stage is not None and stage.synapse is not None:
            counts.synaptic_events += float(stage.synapse.synaptic_events(per_neuron[:index]).sum())

    # --- ANN views -------------------------------------------------------------------------------
    def twin(self, x: Tensor) -> Tensor:
        """The ANN twin on inputs ``(B, *)``: what the SNN's decoded outputs reproduce, ``(B, K)``."""
        if not self.stages or self.stages[-1].kind != "output":
            raise ConversionError("SpikingNetwork: the network has no output stage")
        output = self.activations(x)[-1]
        return output * channel_view(self.output_scale, output.dim() - 1) - self.output_offset

    def activations(self, x: Tensor, *, narrow: bool = False) -> list[Tensor]:
        """Twin activations of every value node (normalised units), for inspection.

        With ``narrow`` each layer is computed in its :meth:`exact_dtypes` entry (float32 where
        that is exact), as the closed forms do: the values are the same, and a layer computed
        in float32 keeps its value in float32 (the network's dtype otherwise).
        """
        x = self._check_input(x)
        values = self.first_values(x)
        dtypes = self.exact_dtypes() if narrow else []
        for index, stage in enumerate(self.stages):
            if index < len(values) - 1:
                continue
            if stage.kind == "pool":
                values.append(stage.pool(values[stage.source]))
                continue
            output = stage.kind == "output"
            if not narrow:
                values.append(self.rule.layer_twin(stage.synapse, values, output=output))
                continue
            dtype = torch.float32 if dtypes[index] == torch.float32 else x.dtype
            sources = set(stage.inputs)
            inputs = [v.to(dtype) if i in sources else v for i, v in enumerate(values)]
            values.append(self.rule.layer_twin(self.narrow_synapse(index), inputs, output=output))
        return values

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, latency={self.latency} steps"
