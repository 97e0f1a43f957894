"""SpikingJelly 2.x adapter: nodes, CuPy kernels and the ann2snn hook.

Supported: SpikingJelly ``>=2.0,<3``. The nodes are ``neuron.BaseNode`` subclasses built on the
2.x functional-state API (``single_step_functional_forward``, ``materialize_states``), which
SpikingJelly 0.0.0.0.14 does not have; importing this module with 0.0.0.0.14 (or any 0.x) raises
``ImportError`` saying so.

Example:
    >>> import torch
    >>> from snn_encodings.specs import ICRate
    >>> from snn_encodings.adapters.spikingjelly import ICRateNode
    >>> node = ICRateNode(ICRate(steps=4), step_mode="m")
    >>> node(torch.full((4, 1), 0.5)).flatten().tolist()
    [1.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from importlib import metadata

from ._compat import check_spikingjelly

try:
    import spikingjelly
    from spikingjelly.activation_based import neuron as _neuron
except ImportError as _error:
    raise ImportError(
        "snn_encodings.adapters.spikingjelly needs SpikingJelly 2.x: pip install "
        '"snn-encodings[spikingjelly]"'
    ) from _error


def _version() -> str:
    try:
        return metadata.version("spikingjelly")
    except metadata.PackageNotFoundError:
        return str(getattr(spikingjelly, "__version__", "unknown"))


check_spikingjelly(_version(), hasattr(_neuron.BaseNode, "single_step_functional_forward"))

from .nodes import NEURONS, ICRateNode, Node, QuartzNode, RadixNode, class_scores
from .recipe import WholeRun, recipe

__all__ = [
    "NEURONS",
    "ICRateNode",
    "Node",
    "QuartzNode",
    "RadixNode",
    "WholeRun",
    "class_scores",
    "recipe",
]
