"""Trace an ANN into the pipeline's graph: spiking layers fed by sums of linear branches.

A converted network is a list of *value* nodes in topological order. Node 0 is the input; every
later node is an activation (a spiking neuron layer), a max-pooling of an earlier node, or the
output. The pre-activation of a neuron layer is expanded, by linearity, into a sum of
*branches* (a chain of bias-free linear ops applied to one earlier value node) plus one bias map.
Conv/Linear, average pooling, flatten and residual additions all fit that form; BatchNorm is folded
into the preceding Conv/Linear and Dropout/Identity are removed.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from snn_encodings.conversion.twin import ClipQuant
from snn_encodings.errors import ConversionError
from snn_encodings.functional.channels import channel_view

__all__ = ["Branch", "GraphNode", "clip_activation", "clip_scale", "trace"]

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
LINEAR_MODULES = WEIGHTED + (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
)
REMOVED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class Branch:
    """A chain of bias-free linear ``ops`` applied to value node ``source``."""

    source: int
    ops: list[nn.Module]


@dataclass
class GraphNode:
    """One value node of the traced network.

    Attributes:
        kind: ``"neuron"`` (activation), ``"pool"`` (max-pooling) or ``"output"``.
        name: the ANN's name for it (module path or fx node name), used in messages.
        branches: the pre-activation's linear branches (neuron and output nodes).
        bias: the pre-activation's bias map, shape of one sample's features.
        clip: upper bound of a clipping activation (ReLU6, Hardtanh, ClipQuant), else ``None``;
            a :class:`ClipQuant`'s is a tensor, 0-d or ``(C,)`` per channel (see
            :func:`clip_scale`).
        pool: the max-pooling module (pool nodes), whose input is ``branches[0].source``.
        levels, shift: quantisation of a :class:`ClipQuant` activation, else ``None``/0.
    """

    kind: str
    name: str
    branches: list[Branch] = field(default_factory=list)
    bias: Tensor | None = None
    clip: float | Tensor | None = None
    pool: nn.Module | None = None
    levels: int | None = None
    shift: float = 0.0


def _without_bias(module: nn.Module) -> nn.Module:
    clone = copy.deepcopy(module)
    if isinstance(clone, WEIGHTED) and clone.bias is not None:
        clone.bias = None
    return clone


def clip_scale(clip: float | Tensor) -> Tensor:
    """The layer scale a clipping activation fixes: its bound as a float32 tensor, 0-d or
    ``(C,)`` per channel (a per-channel :class:`ClipQuant`)."""
    return torch.as_tensor(clip, dtype=torch.float32).detach().clone()


def clip_activation(value: Tensor, clip: float | Tensor | None) -> Tensor:
    """A batch ``(B, C, *)`` through a node's float activation: ReLU, or clamped to
    ``[0, clip]`` with a per-channel ``(C,)`` bound broadcast over dim 1."""
    if clip is None:
        return value.clamp(min=0)
    bound = torch.as_tensor(clip, dtype=value.dtype, device=value.device)
    return torch.minimum(value.clamp(min=0), channel_view(bound, value.dim() - 1))


def _activation_clip(module: nn.Module) -> tuple[float | Tensor | None, int | None, float] | None:
    """``(clip, levels, shift)`` if ``module`` is a ReLU-like activation, else ``None``."""
    if type(module) is nn.ReLU:
        return None, None, 0.0
    if isinstance(module, nn.ReLU6):
        return 6.0, None, 0.0
    if isinstance(module, nn.Hardtanh) and module.min_val == 0.0:
        return float(module.max_val), None, 0.0
    if isinstance(module, ClipQuant):
        return module.bound, module.levels, module.shift
    return None


_SUGGESTIONS = {
    nn.Sigmoid: "replace it with ReLU (or a clipped ReLU) and fine-tune",
    nn.Tanh: "replace it with ReLU (or a clipped ReLU) and fine-tune",
    nn.GELU: "replace it with ReLU and fine-tune",
    nn.LeakyReLU: "replace it with ReLU and fine-tune",
    nn.BatchNorm1d: "put BatchNorm directly after a Conv/Linear so it can be folded",
    nn.BatchNorm2d: "put BatchNorm directly after a Conv/Linear so it can be folded",
}


SUPPORTED = {
    "call_module": (
        "supported modules: nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d/2d (after a "
        "Conv/Linear), nn.ReLU, nn.ReLU6, nn.Hardtanh(0, max), nn.AvgPool1d/2d, "
        "nn.AdaptiveAvgPool1d/2d, nn.MaxPool1d/2d (after an activation), nn.Flatten, "
        "nn.Dropout, nn.Identity"
    ),
    "call_function": (
        "supported functions: F.relu, F.relu6, torch.relu, F.max_pool1d/2d (after an "
        "activation), F.avg_pool1d/2d, F.adaptive_avg_pool1d/2d, F.dropout, torch.flatten(x, 1), "
        "torch.reshape(x, (x.shape[0], -1)), + / += / torch.add of two tensors"
    ),
    "call_method": (
        "supported tensor methods: x.relu(), x.relu_(), x.flatten(1), x.view(x.size(0), -1), "
        "x.view(-1, n), x.reshape(x.shape[0], -1), x.size(), x.shape, x.add(y), x.add_(y)"
    ),
}
"""What :func:`trace` accepts, per form of op (module, function, tensor method)."""


def _unsupported(
    name: str, what: str, suggestion: str = "", op: str = "call_module"
) -> ConversionError:
    hint = suggestion or SUPPORTED.get(op, SUPPORTED["call_module"])
    return ConversionError(f"convert: layer {name!r} ({what}) is not supported; {hint}")


def _fold_batch_norms(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], BATCH_NORMS):
            continue
        parent = node.args[0]
        owner = (
            modules.get(parent.target)
            if isinstance(parent, fx.Node) and parent.op == "call_module"
            else None
        )
        if not isinstance(owner, WEIGHTED) or len(parent.users) != 1:
            raise _unsupported(
                node.target, type(modules[node.target]).__name__, _SUGGESTIONS[nn.BatchNorm2d]
            )
        bn = modules[node.target]
        fused = (
            fuse_linear_bn_eval(owner, bn)
            if isinstance(owner, nn.Linear)
            else fuse_conv_bn_eval(owner, bn)
        )
        _set_module(gm, parent.target, fused)
        node.replace_all_uses_with(parent)
        gm.graph.erase_node(node)
    gm.recompile()


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    *path, last = target.split(".")
    owner: nn.Module = gm
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, last, module)


def _is_add(node: fx.Node) -> bool:
    return (
        node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add)
    ) or (node.op == "call_method" and node.target in ("add", "add_"))


def _is_flatten(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )


_RELU_FUNCTIONS = (torch.relu, torch.relu_, torch.nn.functional.relu)
_RELU6_FUNCTIONS = (torch.nn.functional.relu6,)
_POOL_FUNCTIONS = {
    torch.nn.functional.max_pool1d: nn.MaxPool1d,
    torch.nn.functional.max_pool2d: nn.MaxPool2d,
    torch.nn.functional.avg_pool1d: nn.AvgPool1d,
    torch.nn.functional.avg_pool2d: nn.AvgPool2d,
    torch.nn.functional.adaptive_avg_pool1d: nn.AdaptiveAvgPool1d,
    torch.nn.functional.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d,
}
for _name in ("max_pool1d", "max_pool2d", "avg_pool1d", "adaptive_avg_pool1d"):
    if hasattr(torch, _name):  # the torch.* aliases of the functional pools
        _POOL_FUNCTIONS[getattr(torch, _name)] = _POOL_FUNCTIONS[
            getattr(torch.nn.functional, _name)
        ]


def _function_activation(
    node: fx.Node,
) -> tuple[float | Tensor | None, int | None, float] | None:
    """``(clip, levels, shift)`` for F.relu / F.relu6 / x.relu() forms (in place too), else None."""
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return None, None, 0.0
    if node.op == "call_function" and node.target in _RELU6_FUNCTIONS:
        return 6.0, None, 0.0
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return None, None, 0.0
    return None


def _pool_module(node: fx.Node) -> nn.Module | None:
    """The pooling module equal to a functional pool call (``F.max_pool2d(x, 2)``), else None."""
    if node.op != "call_function" or node.target not in _POOL_FUNCTIONS:
        return None
    arguments = [*node.args[1:], *node.kwargs.values()]
    if node.kwargs.get("return_indices") or any(isinstance(a, fx.Node) for a in arguments):
        written = f"{_written(node, None)} with computed arguments or return_indices"
        raise _unsupported(node.name, written, op=node.op)
    return _POOL_FUNCTIONS[node.target](*node.args[1:], **node.kwargs)


def _is_shape(node: fx.Node, shapes: dict[fx.Node, object]) -> bool:
    """Whether ``node`` computes sizes, not activations: ``x.size(0)``, ``x.shape[0]``, ..."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] == "shape"
    return (
        node.op == "call_function"
        and node.target is operator.getitem
        and isinstance(node.args[0], fx.Node)
        and node.args[0] in shapes
    )


def _shape_value(node: fx.Node, shapes: dict[fx.Node, object], values: dict) -> object:
    """Evaluate a size node on the example's values (sizes only; no activation is computed)."""
    args = fx.node.map_arg(node.args, lambda n: shapes[n] if n in shapes else values[n])
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:])
    return node.target(*args)  # type: ignore[operator]


def _reshape_module(node: fx.Node, shapes: dict[fx.Node, object], values: dict) -> nn.Module | None:
    """``nn.Flatten()`` for a view/reshape that flattens to ``(batch, features)``, else None.

    Raises:
        ConversionError: for a view/reshape to any other shape.
    """
    is_method = node.op == "call_method" and node.target in ("view", "reshape")
    if not (is_method or (node.op == "call_function" and node.target is torch.reshape)):
        return None
    source = node.args[0]
    if not isinstance(source, fx.Node) or source not in values:
        raise _unsupported(node.name, "reshape of a computed size", op=node.op)
    try:
        sizes = fx.node.map_arg(node.args[1:], lambda n: shapes[n])
    except KeyError:
        raise _unsupported(node.name, f"{node.target} with a tensor argument", op=node.op) from None
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
        sizes = tuple(sizes[0])
    example = values[source]
    result = example.reshape(*sizes)
    if tuple(result.shape) != (example.shape[0], example[0].numel()):
        written = getattr(node.target, "__name__", node.target)
        raise _unsupported(
            node.name,
            f"{written} to shape {tuple(result.shape)[1:]} per sample",
            "only flattening each sample is supported: x.view(x.size(0), -1), x.flatten(1)",
            op=node.op,
        )
    return nn.Flatten()


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps :class:`ClipQuant` activations as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, ClipQuant) or super().is_leaf_module(m, module_qualified_name)


def trace(ann: nn.Module, example: Tensor) -> list[GraphNode]:
    """Trace ``ann`` (never modified) into value nodes; node 0 is the input.

    Args:
        ann: an ``nn.Sequential`` or any torch.fx-traceable module of supported layers.
        example: one input batch ``(B, *)`` used to check shapes and compute bias maps.
    Returns:
        The value nodes in topological order; the last has kind ``"output"``.
    Raises:
        ConversionError: naming the first unsupported layer and what to do.
    """
    model = copy.deepcopy(ann).eval()
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as error:  # fx raises many types for untraceable code
        raise ConversionError(
            f"convert: the model could not be traced with torch.fx ({type(error).__name__}: "
            f"{error}); "
            "write it as nn.Sequential or remove data-dependent control flow"
        ) from None
    _fold_batch_norms(gm)
    modules = dict(gm.named_modules())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(
            f"convert: the model must take one input tensor, it takes {len(placeholders)}"
        )

    nodes: list[GraphNode] = [GraphNode(kind="input", name="input")]
    value_index: dict[fx.Node, int] = {placeholders[0]: 0}
    linear: dict[fx.Node, list[Branch]] = {}  # pre-activation branches of linear nodes
    values: dict[fx.Node, Tensor] = {}
    zeros: dict[fx.Node, Tensor] = {}  # each node's value with every source set to zero
    deferred_pool: dict[fx.Node, fx.Node] = {}
    pool_modules: dict[fx.Node, nn.Module] = {}  # max-pool modules, also of F.max_pool2d calls
    shapes: dict[fx.Node, object] = {}  # sizes computed from activations (x.size(0), x.shape)

    def branches_of(node: fx.Node) -> list[Branch]:
        if node in value_index:
            return [Branch(value_index[node], [])]
        return linear[node]

    with torch.no_grad():
        values[placeholders[0]] = example
        zeros[placeholders[0]] = torch.zeros_like(example[:1])
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                result = node.args[0]
                if not isinstance(result, fx.Node) or result in value_index:
                    raise ConversionError(
                        "convert: the model must end in a Conv/Linear layer (its logits), "
                        "not an activation or pooling"
                    )
                nodes.append(
                    GraphNode(
                        kind="output",
                        name="output",
                        branches=branches_of(result),
                        bias=zeros[result][0],
                    )
                )
                return nodes
            if _is_shape(node, shapes):
                shapes[node] = _shape_value(node, shapes, values)
                continue
            module = (
                modules.get(node.target)
                if node.op == "call_module"
                else _pool_module(node) or _reshape_module(node, shapes, values)
            )
            name = str(node.target) if node.op == "call_module" else node.name
            args = [a for a in node.args if isinstance(a, fx.Node)]
            if isinstance(module, REMOVED) or (
                node.op == "call_function" and node.target is torch.nn.functional.dropout
            ):
                _alias(node, args[0], value_index, linear, values)
                zeros[node] = zeros[args[0]]
                continue
            activation = (
                _activation_clip(module) if module is not None else _function_activation(node)
            )
            if activation is not None:
                source = args[0]
                pool_node = deferred_pool.pop(source, None)
                pre = pool_node.args[0] if pool_node is not None else source
                if pre in value_index:
                    raise _unsupported(
                        name, "activation of an activation", "remove the repeated activation"
                    )
                clip, levels, shift = activation
                _check_channels(name, clip, values[pre])
                nodes.append(
                    GraphNode(
                        kind="neuron",
                        name=name,
                        branches=branches_of(pre),
                        bias=zeros[pre][0],
                        clip=clip,
                        levels=levels,
                        shift=shift,
                    )
                )
                pre_value = values[pre]
                activated = clip_activation(pre_value, clip)
                if pool_node is not None:
                    value_index[pre] = len(nodes) - 1
                    pool = copy.deepcopy(pool_modules[pool_node])
                    nodes.append(
                        GraphNode(
                            kind="pool",
                            name=_name(pool_node),
                            branches=[Branch(len(nodes) - 1, [])],
                            pool=pool,
                        )
                    )
                    activated = pool(activated)
                value_index[node] = len(nodes) - 1
                values[node] = activated
                zeros[node] = torch.zeros_like(activated[:1])
                continue
            if isinstance(module, MAX_POOLS):
                source = args[0]
                if source in value_index:
                    nodes.append(
                        GraphNode(
                            kind="pool",
                            name=name,
                            branches=[Branch(value_index[source], [])],
                            pool=copy.deepcopy(module),
                        )
                    )
                    value_index[node] = len(nodes) - 1
                    values[node] = module(values[source])
                    zeros[node] = torch.zeros_like(values[node][:1])
                    continue
                if len(node.users) == 1 and _activation_user(next(iter(node.users)), modules):
                    deferred_pool[node] = node
                    pool_modules[node] = module
                    continue
                raise _unsupported(
                    name, type(module).__name__, "max-pool the output of an activation (ReLU)"
                )
            if isinstance(module, LINEAR_MODULES) or _is_flatten(node):
                op = module if module is not None else _flatten_module(node)
                source = args[0]
                if source in deferred_pool:
                    raise _unsupported(
                        name,
                        "linear layer after max-pooling of a pre-activation",
                        "apply ReLU before MaxPool",
                    )
                linear[node] = [
                    Branch(b.source, b.ops + [_without_bias(op)]) for b in branches_of(source)
                ]
                values[node] = op(values[source])
                zeros[node] = op(zeros[source])
                continue
            if _is_add(node):
                if len(args) != 2 or len(node.args) != 2:
                    raise _unsupported(name, "addition with a constant", "add two tensors only")
                if any(a in deferred_pool for a in args):
                    raise _unsupported(
                        name,
                        "addition after max-pooling of a pre-activation",
                        "apply ReLU before MaxPool",
                    )
                linear[node] = branches_of(args[0]) + branches_of(args[1])
                values[node] = values[args[0]] + values[args[1]]
                zeros[node] = zeros[args[0]] + zeros[args[1]]
                continue
            suggestion = _SUGGESTIONS.get(type(module), "") if module is not None else ""
            raise _unsupported(name, _written(node, module), suggestion, op=node.op)
    raise ConversionError("convert: the traced model has no output")


def _check_channels(name: str, clip: float | Tensor | None, value: Tensor) -> None:
    """Refuse a per-channel clip bound whose length is not the channel count of ``value``."""
    if isinstance(clip, Tensor) and clip.dim() == 1 and (
        value.dim() < 2 or clip.numel() != value.shape[1]
    ):
        channels = value.shape[1] if value.dim() >= 2 else "no"
        raise ConversionError(
            f"convert: layer {name!r} has {clip.numel()} per-channel clip bounds but its input "
            f"has {channels} channels (dim 1); give ClipQuant one scale per channel of its input"
        )


def _activation_user(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return _activation_clip(modules[node.target]) is not None
    return _function_activation(node) is not None


def _name(node: fx.Node) -> str:
    """The ANN's name for ``node``: its module path, or fx's name for a function call."""
    return str(node.target) if node.op == "call_module" else node.name


def _written(node: fx.Node, module: nn.Module | None) -> str:
    """The op as the user wrote it: ``nn.GELU``, ``torch.nn.functional.gelu``, ``x.sigmoid()``."""
    if module is not None:
        return f"nn.{type(module).__name__}"
    if node.op == "call_method":
        return f"x.{node.target}()"
    name = getattr(node.target, "__name__", str(node.target))
    if getattr(torch.nn.functional, name, None) is node.target:
        return f"F.{name}"
    if getattr(torch, name, None) is node.target:
        return f"torch.{name}"
    return f"{getattr(node.target, '__module__', None) or 'torch'}.{name}"


def _flatten_module(node: fx.Node) -> nn.Module:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    if start != 1 or end != -1:
        raise _unsupported(
            node.name,
            f"flatten(start_dim={start}, end_dim={end})",
            "flatten from dim 1 (keep the batch)",
        )
    return nn.Flatten()


def _alias(node: fx.Node, source: fx.Node, value_index: dict, linear: dict, values: dict) -> None:
    if source in value_index:
        value_index[node] = value_index[source]
    elif source in linear:
        linear[node] = linear[source]
    values[node] = values[source]
