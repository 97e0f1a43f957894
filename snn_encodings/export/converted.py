"""From the network :func:`snn_encodings.convert` returns to the export view (:class:`FloatNetwork`).

:func:`float_network` reads a :class:`~snn_encodings.conversion.network.SpikingNetwork` stage by
stage: each synapse's single branch (its Conv/Linear with the normalisation scales already folded
in, any remaining branch gains folded here), its bias map (threshold units), each neuron layer's
initial membrane ``v0`` (scalar or per channel), the output stage's decoding and the network's
``output_scale``. What netx cannot express is refused with the layer's name, the reason and what
to do. :func:`encode_inputs` gives the input spikes the converted network itself feeds its first
layer, so the file, the fixed-point model and the float network see the same events.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from snn_encodings.conversion.network import SpikingNetwork, Stage
from snn_encodings.conversion.synapse import Synapse
from snn_encodings.encoding import encoding_for
from snn_encodings.errors import ExportError
from snn_encodings.export.lowering import FloatLayer, FloatNetwork
from snn_encodings.functional.channels import channel_view

__all__ = ["encode_inputs", "float_network"]

NETX_WEIGHTED = (nn.Linear, nn.Conv2d)
"""The weighted ops netx has a layer for (a subset of the converter's ``graph.WEIGHTED``)."""


def float_network(network: SpikingNetwork) -> FloatNetwork:
    """The export view of a converted network.

    Args:
        network: what :func:`snn_encodings.convert` returned.
    Returns:
        A :class:`FloatNetwork`: a chain of flatten/dense/conv layers in threshold units, with
        ``readout="membrane"`` for a compensated IC-rate output (count plus residual membrane,
        i.e. the time-averaged input current) and ``"spikes"`` otherwise.
    Raises:
        ExportError: for a max-pooling stage, a synapse with more than one branch (a residual
            or skip connection), a branch that does not read the previous layer, or an op netx
            has no layer for, naming the layer and what to do.
    """
    if not isinstance(network, SpikingNetwork):
        raise ExportError(
            f"export.netx: expected a converted SpikingNetwork, got {type(network).__name__}"
        )
    layers: list[FloatLayer] = []
    shapes: list[tuple[int, ...]] = [tuple(network.input_shape)]
    for index, module in enumerate(network.stages, start=1):
        stage = cast(Stage, module)
        where = f"export.netx: layer {stage.name!r}"
        if stage.kind == "pool":
            raise ExportError(
                f"{where} (max-pooling): netx cannot load pooling layers, and a max over spike "
                "trains needs a gate Lava's CUBA neurons cannot build; retrain with strided "
                "convolutions instead (snn_encodings.models 'convnet' has no pooling)"
            )
        layers.extend(_stage_layers(stage, index, shapes, where))
        shapes.append(tuple(int(n) for n in stage.shape))
    spec = network.spec
    return FloatNetwork(
        spec=spec,
        input_shape=tuple(network.input_shape),
        layers=tuple(layers),
        readout=encoding_for(spec).readout(spec),
        output_scale=cast(Tensor, network.output_scale)
        .detach()
        .to("cpu", torch.float64)
        .numpy()
        .copy(),
        output_offset=float(cast(Tensor, network.output_offset)),
    )


def _stage_layers(
    stage: Stage, index: int, shapes: list[tuple[int, ...]], where: str
) -> list[FloatLayer]:
    synapse = stage.synapse
    if synapse is None:
        raise ExportError(f"{where}: has no synapse")
    _check_chain(synapse, index, where)
    ops = _netx_ops(list(cast(nn.Sequential, synapse.ops[0])), where)
    layers = [FloatLayer(kind="flatten", name=f"{stage.name}.flatten") for _ in ops[:-1]]
    op = ops[-1]
    v0 = getattr(stage.neurons, "v0", None)
    conv = isinstance(op, nn.Conv2d)
    layers.append(
        FloatLayer(
            kind="conv" if conv else "dense",
            name=stage.name,
            weight=_weight(op, synapse, shapes[index - 1], where).numpy(),
            bias=_bias(synapse, conv, where),
            v0=None if not isinstance(v0, Tensor) else _v0(v0, conv),
            **(_geometry(cast(nn.Conv2d, op)) if conv else {}),
        )
    )
    return layers


def _check_chain(synapse: Synapse, index: int, where: str) -> None:
    """Refuse a synapse that is not one branch reading the layer just before it."""
    if len(synapse.sources) != 1:
        raise ExportError(
            f"{where}: its input is a sum of {len(synapse.sources)} branches (a residual or skip "
            "connection); netx networks are sequential chains without skip connections. Remove "
            "the addition from the ANN, or export with NIR, which has graph edges"
        )
    if synapse.sources[0] != index - 1:
        raise ExportError(
            f"{where}: reads value node {synapse.sources[0]}, not the layer just before it; netx "
            "networks are sequential chains without skip connections"
        )


def _netx_ops(ops: list[nn.Module], where: str) -> list[nn.Module]:
    """``ops`` if they are optional flattens followed by one Conv2d or Linear, else raise."""
    for op in ops:
        if isinstance(op, (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            raise ExportError(
                f"{where} ({type(op).__name__}): netx cannot load pooling layers; fold the average "
                "pooling into the next convolution (a strided conv with the pooled kernel) or "
                "retrain with strided convolutions"
            )
        if not isinstance(op, (*NETX_WEIGHTED, nn.Flatten)):
            raise ExportError(
                f"{where} ({type(op).__name__}): netx has no such layer; use Conv2d, Linear and "
                "Flatten"
            )
    weighted = [i for i, op in enumerate(ops) if isinstance(op, NETX_WEIGHTED)]
    if len(weighted) != 1 or weighted[0] != len(ops) - 1:
        raise ExportError(
            f"{where}: expected optional flattens followed by one Conv2d or Linear, got "
            f"{[type(op).__name__ for op in ops]}"
        )
    return ops


def _weight(op: nn.Module, synapse: Synapse, source_shape: tuple[int, ...], where: str) -> Tensor:
    """The op's weight (float64) with the branch's input and output gains folded in."""
    g_in, g_out = (g.detach().to("cpu", torch.float64) for g in synapse.gains(0))
    weight = cast(Tensor, op.weight).detach().to("cpu", torch.float64).clone()
    if isinstance(op, nn.Linear):
        columns = (torch.zeros(source_shape, dtype=torch.float64) + g_in).reshape(-1)
        weight = weight * columns.view(1, -1)
    else:
        conv = cast(nn.Conv2d, op)
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ExportError(
                f"{where} (Conv2d): padding {conv.padding!r} ({conv.padding_mode}) has no netx "
                "form; use integer zero padding"
            )
        per_channel = (torch.zeros(source_shape, dtype=torch.float64) + g_in).flatten(1)
        if not torch.all(per_channel == per_channel[:, :1]):
            raise ExportError(
                f"{where}: its input gain varies within a channel; netx conv weights cannot hold it"
            )
        gain = per_channel[:, 0]
        if conv.groups != 1 and not torch.all(gain == gain[0]):
            raise ExportError(f"{where}: per-channel input gains need groups=1 convolutions")
        weight = weight * (gain[0] if conv.groups != 1 else gain.view(1, -1, 1, 1))
    return weight * channel_view(g_out, weight.dim())


def _bias(synapse: Synapse, conv: bool, where: str) -> np.ndarray | None:
    """The synapse's per-step bias, one value per channel for a conv; ``None`` if all zero."""
    bias = cast(Tensor, synapse.bias).detach().to("cpu", torch.float64)
    if conv:
        flat = bias.flatten(1)
        if not torch.all(flat == flat[:, :1]):
            raise ExportError(
                f"{where}: its bias varies within a channel; netx conv biases are per channel"
            )
        bias = flat[:, 0]
    return bias.numpy() if bias.any() else None


def _geometry(op: nn.Conv2d) -> dict[str, Any]:
    return {
        "stride": _pair(op.stride),
        "padding": _pair(cast(tuple[int, ...], op.padding)),
        "dilation": _pair(op.dilation),
        "groups": int(op.groups),
    }


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _v0(v0: Tensor, conv: bool) -> float | np.ndarray:
    value = v0.detach().to("cpu", torch.float64)
    if value.dim() == 0:
        return float(value)
    array = value.numpy().copy()
    return array.reshape(-1, 1, 1) if conv else array


def encode_inputs(network: SpikingNetwork, x: Tensor) -> np.ndarray:
    """The first-layer input spikes the converted network feeds itself, one row per sample.

    Args:
        network: the converted network.
        x: inputs ``(B, *input_shape)`` as the network is called with.
    Returns:
        ``(B, T, *input_shape)`` int8 spikes (use ``IntNetwork.drive`` on one row; flatten
        each step for a network whose convolutions were unrolled).
    Raises:
        ExportError: if the encoding's first layer receives real values rather than spikes.
    """
    with torch.no_grad():
        encoded = network.rule.encode_input(network._check_input(x))
    values = encoded.detach().to("cpu").numpy()
    if not np.isin(values, (0.0, 1.0)).all():
        raise ExportError(
            f"export input: {type(network.spec).__name__} feeds its first layer real values, not "
            "spikes; Loihi inputs are binary events (for IC-rate use input_coding='sigma_delta')"
        )
    return np.moveaxis(values, 0, 1).astype(np.int8)
