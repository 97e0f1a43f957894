"""The init-compensated rate encoding (IC-SNN, Li et al. 2023) spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from snn_encodings.errors import SpecError
from snn_encodings.specs.base import Spec, check_choice, check_float, check_int

__all__ = ["ICRate"]

ICRateInit = Literal["zero", "ann", "data"]
ICRateInput = Literal["analog", "sigma_delta"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ICRate(Spec):
    r"""Rate coding with an initialised membrane and coding compensation (IC-SNN).

    Integrate-and-fire neurons with reset by subtraction; a value :math:`a \in [0, 1]` (in
    threshold units) is carried by the spike count over ``steps`` steps. Low latency comes from:

    - ``init``: the initial membrane potential :math:`v_0`. ``"zero"`` is plain rate conversion;
      ``"ann"`` sets :math:`v_0 = \theta/2` (IC-SNN Algorithm 1, "from a trained ANN"; the
      optimum of the expected quantisation error, as in OPI); ``"data"`` measures the mean
      residual membrane of the converted SNN on calibration data per layer and channel
      (Algorithm 2, "from the training set"). Both algorithms are reconstructions: the paper's
      text has only their headings.
    - ``compensate``: coding compensation (Algorithm 3, reconstructed): the output layer is read
      as spike count plus residual membrane, and sigma-delta input coding starts its error
      accumulator at one half.

    Args:
        steps: time steps per inference, ``T >= 1``.
        threshold: firing threshold :math:`\theta` in normalised units (1 after conversion).
        init: initial-membrane rule, ``"zero"``, ``"ann"`` or ``"data"``.
        compensate: read outputs as count + residual and centre the sigma-delta input coder.
        input_coding: ``"analog"`` (the first layer receives the pixel value every step) or
            ``"sigma_delta"`` (deterministic error-feedback spikes, for spike-only hardware).
        signed: neurons that also emit a negative spike, taking one back, when the membrane
            falls below zero after they have fired (spikes in ``{-1, 0, 1}``). A neuron's net
            count then follows its total input whatever the order in which the input arrives,
            which plain rate neurons cannot (an early burst of positive current fires spikes a
            later negative current cannot undo): converted BatchNorm and residual networks
            need it to track their twin. ``None`` (default): plain neurons, which
            :func:`~snn_encodings.conversion.convert` makes signed where they would lose their
            twin's decisions and signed ones keep more of them (networks without max-pooling;
            the network's spec then reads ``signed=True``). ``False``: always plain. Our
            extension, not in IC-SNN; the core network, the framework adapters and the CuPy
            kernels run it, while max-pooling and the netx and NIR exports refuse it.

    Raises:
        SpecError: for a field out of range, naming the field.

    Example:
        >>> ICRate(steps=8).init
        'ann'
    """

    steps: int = 16
    threshold: float = 1.0
    init: ICRateInit = "ann"
    compensate: bool = True
    input_coding: ICRateInput = "analog"
    signed: bool | None = None

    def __post_init__(self) -> None:
        check_int(self, "steps", minimum=1)
        check_float(self, "threshold", positive=True)
        check_choice(self, "init", ("zero", "ann", "data"))
        if not isinstance(self.compensate, bool):
            raise SpecError(f"ICRate.compensate must be a bool, got {self.compensate!r}")
        check_choice(self, "input_coding", ("analog", "sigma_delta"))
        if self.signed is not None and not isinstance(self.signed, bool):
            raise SpecError(f"ICRate.signed must be a bool or None, got {self.signed!r}")

    @property
    def steps_per_layer(self) -> int:
        return self.steps

    @property
    def layer_latency(self) -> int:
        return 0

    @property
    def default_v0(self) -> float:
        """Initial membrane before any data is seen: 0 for ``"zero"``, else :math:`\\theta/2`."""
        return 0.0 if self.init == "zero" else self.threshold / 2
