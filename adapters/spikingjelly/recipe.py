"""The ann2snn hook: recipes for SpikingJelly's own converter, ``ann2snn.Converter(recipe)``.

Users keep SpikingJelly's converter and call pattern::

    snn = ann2snn.Converter(recipe(spec, loader)).convert(ann)

- :class:`ICRateRecipe` (IC-rate, the default for :class:`~snn_encodings.specs.ICRate`) *is* a
  SpikingJelly ``RateCodingRecipe``: SpikingJelly fuses Conv+BN, calibrates its ``VoltageHook``
  scales and rebuilds the graph as ``VoltageScaler(θ/λ) -> node -> VoltageScaler(λ)``; only the
  node differs: ``neuron_factory`` builds our :class:`ICRateNode`, which starts from the
  encoding's initial membrane (``init="ann"``: :math:`v_0 = \\theta/2`, IC-SNN Algorithm 1)
  instead of zero. What of IC-SNN's compensation that structure can express:

  * the initial membrane ``init="zero"`` / ``"ann"``: yes (our node);
  * the output read as count plus residual membrane: implicitly, since SpikingJelly keeps the
    last layer non-spiking and the user accumulates its analog output over the ``T`` steps;
  * ``init="data"`` (membranes measured on data, Algorithm 2) and ``input_coding="sigma_delta"``:
    no (the recipe feeds the analog input every step and has no measuring pass), so
    :func:`recipe` refuses them with ``via="spikingjelly"``; ``via="core"`` gives them.

- :class:`CoreConversionRecipe` (radix, Quartz, and IC-rate with ``via="core"``) is an
  ``FXConversionRecipe`` with the same converter interface whose ``replace``/``finalize`` run
  :func:`snn_encodings.convert`, so predictions equal the core converter's. SpikingJelly's
  graph machinery cannot express these encodings: radix and Quartz need per-layer time windows
  that shift by ``spec.layer_latency`` (Quartz reads its output at a fixed time, not as a sum
  over ``T``), and their synapses quantise weights and biases to the encoding's grid. The
  converter's result is then :class:`WholeRun` around our ``SpikingNetwork`` (input ``(B, *)``
  -> decoded output ``(B, classes)``, one call per sample batch, no ``T`` loop and no
  ``reset_net``; both are detected) instead of a ``GraphModule``; calibration uses the
  recipe's ``dataloader``. For Quartz, ``Quartz(analytic=True)`` selects the closed-form
  simulation, two orders of magnitude faster than stepping the window.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, Literal

from spikingjelly.activation_based import base, functional
from spikingjelly.activation_based.ann2snn import FXConversionRecipe, RateCodingRecipe
from torch import Tensor, fx, nn

from snn_encodings.errors import ConversionError, SnnEncodingsWarning
from snn_encodings.specs import ICRate
from snn_encodings.specs.base import Spec

from .nodes import ICRateNode

__all__ = ["CoreConversionRecipe", "ICRateRecipe", "WholeRun", "recipe"]

Via = Literal["spikingjelly", "core"]


class ICRateRecipe(RateCodingRecipe):
    """SpikingJelly's ``RateCodingRecipe`` whose neurons are our :class:`ICRateNode`.

    Args:
        spec: the IC-rate spec (``init`` ``"zero"`` or ``"ann"``, analog input).
        dataloader: calibration batches (tensors, ``(input, target)`` pairs or dicts).
        node_options: keyword options of :class:`ICRateNode` (e.g. ``backend="cupy"``).
            ``run_steps`` defaults to ``spec.steps``: the converted network refuses a ``T``
            loop of another length (``run_steps=None`` lets any ``T`` run).
        rate_options: keyword options of ``RateCodingRecipe`` (``mode``, ``momentum``,
            ``fuse_flag``, ``channel_wise`` ...), except ``neuron_factory``.
    """

    def __init__(
        self,
        spec: ICRate,
        dataloader: Iterable[Any],
        *,
        node_options: dict[str, Any] | None = None,
        **rate_options: Any,
    ) -> None:
        if "neuron_factory" in rate_options:
            raise TypeError("ICRateRecipe builds its own neuron_factory; do not pass one")
        self.spec = spec
        self.node_options = dict(node_options or {})
        super().__init__(dataloader, neuron_factory=self._node, **rate_options)

    def _node(self, scale: float) -> ICRateNode:
        options = {"run_steps": self.spec.steps, **self.node_options}
        return ICRateNode(self.spec, **options)

    def finalize(self, converter: Any, fx_model: fx.GraphModule) -> nn.Module:
        fx_model = super().finalize(converter, fx_model)
        functional.invalidate_reset_cache(fx_model)
        return fx_model.eval()


class CoreConversionRecipe(FXConversionRecipe):
    """An ``FXConversionRecipe`` whose result is :func:`snn_encodings.convert`'s network.

    Args:
        spec: any spec with a conversion rule.
        dataloader: calibration batches, handed to :func:`snn_encodings.convert`.
        convert_options: keyword options of :func:`snn_encodings.convert` (``percentile``,
            ``per_channel``); ``device`` comes from the converter.
    """

    def __init__(self, spec: Spec, dataloader: Iterable[Any], **convert_options: Any) -> None:
        self.spec = spec
        self.dataloader = dataloader
        self.convert_options = convert_options
        self._ann: nn.Module | None = None
        self._network: nn.Module | None = None

    def validate(self, converter: Any) -> None:
        if self.dataloader is None:
            raise ConversionError(
                f"{type(self).__name__} needs calibration data: pass a dataloader"
            )
        _core_convert()

    def before_trace(self, converter: Any, ann: nn.Module) -> nn.Module:
        self._ann = ann
        return ann

    def replace(self, converter: Any, fx_model: fx.GraphModule) -> fx.GraphModule:
        convert = _core_convert()
        self._network = convert(
            self._ann, self.spec, self.dataloader, device=converter.device, **self.convert_options
        )
        return fx_model

    def finalize(self, converter: Any, fx_model: fx.GraphModule) -> nn.Module:
        network, self._ann, self._network = self._network, None, None
        if network is None:
            raise ConversionError(f"{type(self).__name__}: replace() did not run")
        return WholeRun(network).eval()


class WholeRun(base.MemoryModule):
    """A converted network whose single call runs the whole simulation, in SpikingJelly's clothes.

    ``out = snn(x)`` encodes ``x`` ``(B, *)``, simulates every layer's window and returns the
    decoded output ``(B, classes)`` (argmax = prediction): no ``T`` loop, no averaging, no
    ``functional.reset_net``. Those SpikingJelly habits are caught rather than silently
    re-running the simulation: calling it again on the same input tensor without a new batch
    raises, and ``functional.reset_net`` warns once that it is not needed.

    Attributes:
        network: the core :class:`~snn_encodings.SpikingNetwork`.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self._last: Tensor | None = None

    @property
    def spec(self) -> Any:
        """The encoding's spec."""
        return self.network.spec

    def reset(self) -> None:
        warnings.warn(
            f"functional.reset_net: this converted {type(self.spec).__name__} network keeps no "
            "state between calls and one call runs the whole simulation; drop reset_net and the "
            "T-step loop (out = snn(x) is already the decoded output)",
            SnnEncodingsWarning,
            stacklevel=2,
        )
        self._last = None

    def forward(self, x: Tensor) -> Tensor:
        """Decoded outputs ``(B, classes)`` of one whole simulation of inputs ``x`` ``(B, *)``.

        Raises:
            ConversionError: when called again with the very tensor of the previous call (a
                ``for t in range(T)`` loop), which would repeat the same simulation.
        """
        if self._last is not None and x is self._last:
            raise ConversionError(
                f"this converted {type(self.spec).__name__} network was called twice with the "
                f"same input: one call already runs the whole simulation "
                f"({self.spec.steps_per_layer} steps per layer) and returns the decoded output; "
                "drop the T-step loop and use out = snn(x)"
            )
        self._last = x
        return self.network(x)


def _core_convert() -> Any:
    try:
        from snn_encodings.conversion import convert
    except ImportError as error:
        raise ConversionError(
            "this recipe routes through snn_encodings.convert, which this installation lacks; "
            "upgrade snn-encodings"
        ) from error
    return convert


def recipe(
    spec: Spec,
    dataloader: Iterable[Any],
    *,
    via: Via | None = None,
    **options: Any,
) -> FXConversionRecipe:
    """Return the ann2snn recipe for ``spec``: ``ann2snn.Converter(recipe(...)).convert(ann)``.

    Args:
        spec: the encoding.
        dataloader: calibration batches.
        via: ``"spikingjelly"`` (IC-rate only, the default there: SpikingJelly's rate-coding
            machinery with our node) or ``"core"`` (our converter; the default and only choice
            for radix and Quartz).
        options: for ``"spikingjelly"``, ``RateCodingRecipe`` options plus ``node_options``;
            for ``"core"``, :func:`snn_encodings.convert` options.
    Returns:
        An :class:`ICRateRecipe` or a :class:`CoreConversionRecipe`.
    Raises:
        TypeError: if ``spec`` is not a spec.
        ConversionError: for a spec that ``via`` cannot express.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"recipe: expected a neuron spec, got {type(spec).__name__}")
    if via not in (None, "spikingjelly", "core"):
        raise ConversionError(f"recipe: via must be 'spikingjelly' or 'core', got {via!r}")
    if via is None:
        via = "spikingjelly" if isinstance(spec, ICRate) else "core"
    if via == "core":
        return CoreConversionRecipe(spec, dataloader, **options)
    if not isinstance(spec, ICRate):
        raise ConversionError(
            f"recipe: SpikingJelly's rate-coding machinery cannot express "
            f"{type(spec).__name__} (its layer timing and quantised synapses); use via='core'"
        )
    if spec.init == "data" or spec.input_coding != "analog":
        raise ConversionError(
            f"recipe: {spec!r} needs membranes measured on data or sigma-delta input coding, "
            "which RateCodingRecipe cannot express; use via='core', or init='ann' with "
            "input_coding='analog'"
        )
    return ICRateRecipe(spec, dataloader, **options)
