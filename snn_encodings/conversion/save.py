"""Save a converted :class:`SpikingNetwork` once and load it anywhere (other processes, machines).

The file is one ``torch.save`` dictionary of plain Python values and tensors, so it loads with
``torch.load(path, weights_only=True)``: the spec (class name and fields), the graph structure
(every stage's kind, name, shape, source, and the constructor arguments of its linear and pooling
modules), the ``state_dict`` and a SHA-256 checksum of all of it. Nothing is unpickled as code:
only the module types listed in ``_MODULE_ARGUMENTS`` and the specs in ``ALL_SPECS`` are rebuilt.

Loading validates before it builds anything: the checksum (a flipped bit is refused), the keys,
the spec's class and fields, every stage's kind, the number of values the structure would
allocate (at most the number of values the file holds, so a tampered size cannot ask for
gigabytes) and that every weight is finite.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from snn_encodings.conversion.graph import Branch
from snn_encodings.conversion.network import SpikingNetwork, Stage
from snn_encodings.conversion.rules.base import rule_for
from snn_encodings.conversion.synapse import Synapse
from snn_encodings.errors import ExportError
from snn_encodings.files import write_atomically
from snn_encodings.specs import ALL_SPECS
from snn_encodings.specs.base import Spec

__all__ = ["load_network", "load_state", "payload_checksum", "save_network"]

FORMAT = "snn-encodings/spiking-network"
VERSION = 2
_KEYS = ("format", "version", "spec", "input_shape", "stages", "state_dict", "checksum")
_KINDS = ("neuron", "pool", "output")

_CONV = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
)
_AVG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
_MAX = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_MODULE_ARGUMENTS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.Conv1d: _CONV,
    nn.Conv2d: _CONV,
    nn.AvgPool1d: _AVG,
    nn.AvgPool2d: _AVG + ("divisor_override",),
    nn.AdaptiveAvgPool1d: ("output_size",),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.MaxPool1d: _MAX,
    nn.MaxPool2d: _MAX,
}
_MODULES_BY_NAME = {cls.__name__: cls for cls in _MODULE_ARGUMENTS}


def _describe_module(module: nn.Module) -> dict[str, Any]:
    arguments = _MODULE_ARGUMENTS.get(type(module))
    if arguments is None:
        raise ExportError(
            f"save_network: cannot save a {type(module).__name__} module; supported: "
            f"{sorted(_MODULES_BY_NAME)}"
        )
    values = {name: getattr(module, name) for name in arguments}
    if "bias" in values:
        values["bias"] = values["bias"] is not None
    return {"type": type(module).__name__, "arguments": values}


def _build_module(description: dict[str, Any]) -> nn.Module:
    cls = _MODULES_BY_NAME.get(description["type"])
    if cls is None:
        raise ExportError(f"load_network: unknown module type {description['type']!r} in the file")
    try:
        return cls(**description["arguments"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise ExportError(
            f"load_network: cannot build a {cls.__name__} from the file's arguments: {error}"
        ) from None


def _describe_stage(stage: Stage) -> dict[str, Any]:
    description: dict[str, Any] = {
        "kind": stage.kind,
        "name": stage.name,
        "source": stage.source,
        "shape": list(stage.shape),
    }
    if stage.pool is not None:
        description["pool"] = _describe_module(stage.pool)
    synapse = stage.synapse
    if isinstance(synapse, Synapse):
        description["sources"] = list(synapse.sources)
        branches = cast(Iterable[nn.Sequential], synapse.ops)
        description["ops"] = [[_describe_module(op) for op in ops] for ops in branches]
        description["bias_shape"] = list(cast(Tensor, synapse.bias).shape)
    return description


def save_network(network: SpikingNetwork, path: str | os.PathLike[str]) -> Path:
    """Write ``network`` to ``path`` atomically (temporary file in the same folder, then rename).

    Returns:
        The path written.
    Raises:
        TypeError: if ``network`` is not a :class:`SpikingNetwork`.
        ExportError: if a stage holds a module type the format does not know, the folder does
            not exist, or ``path`` is a directory or another non-regular file (never replaced).
    Example:
        >>> net = load_network(save_network(net, "net.pt"))  # doctest: +SKIP
    """
    if not isinstance(network, SpikingNetwork):
        raise TypeError(f"save_network: expected a SpikingNetwork, got {type(network).__name__}")
    spec = network.spec
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": {
            "type": type(spec).__name__,
            "fields": {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)},
        },
        "input_shape": list(network.input_shape),
        "stages": [_describe_stage(cast(Stage, stage)) for stage in network.stages],
        "state_dict": {
            name: tensor.detach().cpu() for name, tensor in network.state_dict().items()
        },
    }
    payload["checksum"] = payload_checksum(payload)
    return write_atomically(path, lambda temporary: torch.save(payload, temporary), "save_network")


def payload_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 of the structure (as sorted JSON) and of every tensor's name, dtype, shape, bytes."""
    structure = {key: payload[key] for key in ("format", "version", "spec", "input_shape")}
    structure["stages"] = payload["stages"]
    digest = hashlib.sha256(json.dumps(structure, sort_keys=True, default=repr).encode())
    for name, tensor in sorted(payload["state_dict"].items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _spec_from(description: dict[str, Any]) -> Spec:
    classes = {cls.__name__: cls for cls in ALL_SPECS}
    cls = classes.get(description["type"])
    if cls is None:
        raise ExportError(
            f"load_network: unknown spec {description['type']!r}; known: {sorted(classes)}"
        )
    fields = description.get("fields")
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fields, dict) or not set(fields) <= known:
        unknown = sorted(set(fields) - known) if isinstance(fields, dict) else fields
        raise ExportError(
            f"load_network: the file's {cls.__name__} has unknown field(s) {unknown!r}; known: "
            f"{sorted(known)}; the file was written by another version or modified"
        )
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:
        raise ExportError(f"load_network: the file's spec is invalid: {error}") from None


def load_network(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> SpikingNetwork:
    """Read a network written by :func:`save_network` (with ``torch.load(weights_only=True)``).

    Returns:
        The :class:`SpikingNetwork` on ``map_location``, in eval mode; its outputs equal the
        saved network's.
    Raises:
        ExportError: for a missing file, a file of another format or version, a checksum that
            does not match (a modified or corrupted file), a missing key, an unknown spec field
            or stage kind, a structure that would allocate more values than the file holds,
            non-finite weights, or a structure that does not match its weights.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportError(f"load_network: no such file {str(path)!r}") from None
    except Exception as error:  # torch.load raises many types for foreign or corrupt files
        raise ExportError(
            f"load_network: {str(path)!r} is not a saved network ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ExportError(f"load_network: {str(path)!r} was not written by save_network")
    if payload.get("version") != VERSION:
        raise ExportError(
            f"load_network: {str(path)!r} has format version {payload.get('version')!r}, this "
            f"library reads {VERSION}; convert again"
        )
    _validate(payload, str(path))
    spec = _spec_from(payload["spec"])
    rule = rule_for(spec)
    input_shape = tuple(payload["input_shape"])
    shapes = [torch.Size(input_shape)] + [torch.Size(s["shape"]) for s in payload["stages"]]
    one = torch.ones(())
    stages = []
    for description in payload["stages"]:
        kind, name, shape = description["kind"], description["name"], tuple(description["shape"])
        if kind == "pool":
            stages.append(
                Stage(
                    kind,
                    name,
                    pool=_build_module(description["pool"]),
                    source=description["source"],
                    shape=shape,
                )
            )
            continue
        branches = [
            Branch(source, [_build_module(op) for op in ops])
            for source, ops in zip(description["sources"], description["ops"])
        ]
        synapse = Synapse(
            branches, torch.zeros(description["bias_shape"]), [one] * len(shapes), one, shapes
        )
        stages.append(
            Stage(
                kind,
                name,
                synapse=synapse,
                neurons=rule.neuron_layer(output=kind == "output"),
                source=description["source"],
                shape=shape,
            )
        )
    network = SpikingNetwork(spec, stages, one, input_shape).to(dtype=rule.dtype)
    try:
        load_state(network, payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise ExportError(
            f"load_network: the weights in {str(path)!r} do not fit its structure: {error}"
        ) from None
    return network.to(map_location).eval()


def _validate(payload: dict[str, Any], path: str) -> None:
    """Refuse a modified, incomplete or absurd file before anything is built from it."""
    missing = [key for key in _KEYS if key not in payload]
    if missing:
        raise ExportError(
            f"load_network: {path!r} lacks the key(s) {missing}; the file is incomplete or was "
            "modified; save the network again"
        )
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, Tensor) for t in state.values()):
        raise ExportError(f"load_network: {path!r} has no valid state_dict; save it again")
    if payload["checksum"] != payload_checksum(payload):
        raise ExportError(
            f"load_network: the checksum of {path!r} does not match its contents: the file was "
            "modified or corrupted after save_network wrote it; save the network again"
        )
    stages = payload["stages"]
    for index, stage in enumerate(stages if isinstance(stages, list) else [None]):
        if not isinstance(stage, dict) or stage.get("kind") not in _KINDS:
            kind = stage.get("kind") if isinstance(stage, dict) else stage
            raise ExportError(
                f"load_network: stage {index} of {path!r} has kind {kind!r}; known: {list(_KINDS)}"
            )
    held = sum(t.numel() for t in state.values())
    needed = sum(_allocated(stage) for stage in stages)
    if needed > held:
        raise ExportError(
            f"load_network: the structure in {path!r} would allocate {needed:,} values but the "
            f"file holds {held:,}; the sizes were modified; save the network again"
        )
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ExportError(
                f"load_network: {name!r} in {path!r} contains NaN or inf; the file is corrupt"
            )


def _allocated(stage: dict[str, Any]) -> int:
    """Values building ``stage`` allocates: its bias map and its linear modules' parameters."""
    try:
        total = math.prod(int(n) for n in stage.get("bias_shape", []))
        for ops in stage.get("ops", []):
            for op in ops:
                arguments = op["arguments"]
                if op["type"] == "Linear":
                    total += int(arguments["in_features"]) * int(arguments["out_features"])
                elif op["type"].startswith("Conv"):
                    kernel = arguments["kernel_size"]
                    total += (
                        int(arguments["in_channels"])
                        * int(arguments["out_channels"])
                        * math.prod(int(k) for k in kernel)
                        // max(1, int(arguments["groups"]))
                    )
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(
            f"load_network: stage {stage.get('name')!r} has a malformed description ({error!r})"
        ) from None
    return total


def load_state(module: nn.Module, state: dict[str, Tensor]) -> None:
    """``module.load_state_dict(state)``, first giving buffers the shapes they have in ``state``.

    Buffers measured in conversion change shape (IC-rate's ``v0`` becomes per-channel), so a
    freshly built layer's default buffer would not fit; parameters must fit as they are.

    Raises:
        RuntimeError: from ``load_state_dict`` for missing, unexpected or misshapen parameters.
    """
    for name, buffer in list(module.named_buffers()):
        saved = state.get(name)
        if saved is not None and saved.shape != buffer.shape:
            owner_name, _, attribute = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            setattr(owner, attribute, saved.detach().clone().to(buffer.device))
    module.load_state_dict(state, strict=True)
