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
  converter's result is then our ``SpikingNetwork`` (input ``(B, *)`` -> decoded output
  ``(B, classes)``, one call per sample batch, no ``reset_net`` needed) instead of a
  ``GraphModule``; calibration uses the recipe's ``dataloader``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from spikingjelly.activation_based import functional
from spikingjelly.activation_based.ann2snn import FXConversionRecipe, RateCodingRecipe
from torch import fx, nn

from snn_encodings.errors import ConversionError
from snn_encodings.specs import ICRate
from snn_encodings.specs.base import Spec

from .nodes import ICRateNode

__all__ = ["CoreConversionRecipe", "ICRateRecipe", "recipe"]

Via = Literal["spikingjelly", "core"]


class ICRateRecipe(RateCodingRecipe):
    """SpikingJelly's ``RateCodingRecipe`` whose neurons are our :class:`ICRateNode`.

    Args:
        spec: the IC-rate spec (``init`` ``"zero"`` or ``"ann"``, analog input).
        dataloader: calibration batches (tensors, ``(input, target)`` pairs or dicts).
        node_options: keyword options of :class:`ICRateNode` (e.g. ``backend="cupy"``).
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
        return ICRateNode(self.spec, **self.node_options)

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
        return network.eval()


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
