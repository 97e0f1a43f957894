"""The TTFS-Quartz encoding (Lenz, Orchard and Sheik 2023) spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from snn_encodings.errors import SpecError
from snn_encodings.specs.base import Spec, check_choice, check_float, check_int

__all__ = ["Quartz"]

QuartzRounding = Literal["round", "floor"]
QuartzMode = Literal["exact", "paper"]
QuartzBiasCoding = Literal["weight", "time"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Quartz(Spec):
    r"""Time-to-first-spike coding with readout and rectifier synapses (Quartz).

    Every neuron fires exactly once per layer; the time of that spike carries a value on the
    grid :math:`1/K` with :math:`K` = ``t_max``. One layer window has :math:`T = 4K` steps:

    ==========================  =====================================================
    step                        meaning
    ==========================  =====================================================
    :math:`t = 2K - n`          input spike of a value :math:`x = n/K` (Eq. 1 shifted)
    :math:`[K, 2K]`             encode phase: inputs in :math:`[0, 1]` arrive
    :math:`2K`                  readout: the synaptic current is set to 1 (unit slope)
    :math:`[2K, 3K]`            decode phase: the neuron fires at :math:`3K - \hat n`
    :math:`3K`                  rectifier: every silent neuron fires (value 0, ReLU)
    ==========================  =====================================================

    The output is shifted :math:`K` steps earlier (``layer_latency``), so a layer's output
    spikes sit on the same times as its inputs and the next layer reads them in its own
    window. Steps :math:`[0, K)` hold values in :math:`(1, 2]` (early spikes and large
    biases); an output layer (no rectifier) can fire up to the end of the window, which
    encodes values down to :math:`-1 + 1/K`.

    **Window convention.** Lenz et al. Eq. 1 encode :math:`s = \lfloor T_{max}(1 - p)\rfloor`
    (grid :math:`1/T_{max}`, :math:`T_{max} + 1` levels); their code uses
    :math:`\mathrm{round}((T_{max} - 1)(2 - x))` in a window of :math:`4(T_{max} - 1)` steps
    (grid :math:`1/(T_{max} - 1)`), yet rounds biases to :math:`1/T_{max}`. Here the grid is
    :math:`1/T_{max}` for inputs, activations and biases alike (the paper's grid, so
    ``t_max = 16`` gives the dyadic grid 1/16 and exact float sums), the times are the
    paper's shifted by :math:`K` (the code's extended window), and the rounding is chosen by
    ``rounding``: ``"round"`` (threshold :math:`K + 1/2`, the code's ``Tmax - 0.5``) or
    ``"floor"`` (threshold :math:`K + 1`, Eq. 8's floor behaviour).

    **Modes.** ``mode="paper"`` is the paper's neuron: it fires whenever its membrane reaches
    the threshold, also during the encode phase when large positive inputs arrive before the
    negative ones (an *early spike*, Lenz et al. Sec. 6.2; its value then differs from the
    ANN twin's, the paper's main source of conversion error). ``mode="exact"`` (default)
    holds the spike until the readout: the threshold is out of reach during the encode phase
    (the two-level dynamic threshold of other TTFS schemes), so a neuron whose sum exceeds 1
    fires at the readout with the clipped value 1, which is what the twin computes: the
    network then equals its twin on every input. Both modes share everything else.

    Args:
        t_max: steps per phase :math:`K \ge 2`; values live on the grid :math:`1/K`.
        mode: ``"exact"`` (no spike before the readout step) or ``"paper"`` (early spikes).
        rounding: ``"round"`` (nearest, halves up) or ``"floor"``: how a neuron maps its
            membrane to a spike time, and how inputs are quantised.
        rectify: hidden neurons fire at the rectifier step if still silent (ReLU); the
            conversion pipeline turns it off for the output layer.
        percentile: activation percentile used as each layer's scale when normalising
            (Lenz et al. Sec. 6.2: 98.5 on MNIST), in :math:`(0, 100]`.
        weight_frac_bits: normalised weights are rounded to multiples of
            :math:`2^{-q}` at conversion, so every membrane sum is exact in float64. The
            default 12 keeps most layers' sums exact in float32 too (about twice as fast
            on CPU, see ``docs/conversion.md``); the error it adds stayed within a few test
            images of 16 bits on the MNIST networks of the benchmarks.
        clip_inputs: clip encoder inputs into :math:`[0, 1]` instead of raising (NaN and
            inf always raise).
        float_first_layer: compute the first parameter layer in float and encode its
            (rectified, quantised) output, as the authors do for standardised image inputs.
        bias_coding: how a layer's bias reaches its neurons. ``"weight"`` (default, Lenz et
            al. Eq. 2: :math:`b\,H(t - s_b)`): one relay spike at the value-1 time carries the
            bias on its weight, so the bias keeps the weights' grid :math:`2^{-q}` and any
            size. ``"time"`` (the authors' code and Quartz-on-Loihi's relay neurons): a spike
            of weight :math:`\pm 1` whose time carries :math:`|b|`, so the bias is rounded to
            the grid :math:`1/K` and clipped to :math:`[-2, 2]`. Both are exact against their
            twin; ``"time"`` loses accuracy at small ``t_max`` (e.g. LeNet-5 on MNIST at
            ``t_max=16``: about 0.1 pt).
        analytic: neuron layers compute the first spike in closed form from the currents
            (vectorised cumulative sums) instead of looping over time, and a converted
            network computes every fire time from a few value passes instead of simulating
            the window; spike for spike equal. Default ``True``; ``False`` steps the
            neurons through the window (what the framework views run).

    Raises:
        SpecError: for a field out of range, naming the field.

    Example:
        >>> spec = Quartz(t_max=16)
        >>> spec.steps_per_layer, spec.layer_latency, spec.threshold
        (64, 16, 16.5)
    """

    t_max: int = 16
    mode: QuartzMode = "exact"
    rounding: QuartzRounding = "round"
    rectify: bool = True
    percentile: float = 98.5
    weight_frac_bits: int = 12
    clip_inputs: bool = False
    float_first_layer: bool = False
    analytic: bool = True
    bias_coding: QuartzBiasCoding = "weight"

    def __post_init__(self) -> None:
        check_int(self, "t_max", minimum=2)
        check_choice(self, "mode", ("exact", "paper"))
        check_choice(self, "rounding", ("round", "floor"))
        check_choice(self, "bias_coding", ("weight", "time"))
        check_float(self, "percentile", positive=True, maximum=100)
        check_int(self, "weight_frac_bits", minimum=0, maximum=40)
        for field in ("rectify", "clip_inputs", "float_first_layer", "analytic"):
            value = getattr(self, field)
            if not isinstance(value, bool):
                raise SpecError(f"Quartz.{field} must be a bool, got {value!r}")

    @property
    def steps_per_layer(self) -> int:
        """Window length :math:`4K`."""
        return 4 * self.t_max

    @property
    def layer_latency(self) -> int:
        """Shift :math:`K` between a layer's input and output times."""
        return self.t_max

    @property
    def read_step(self) -> int:
        """Step :math:`2K` at which the readout synapse sets the current to 1."""
        return 2 * self.t_max

    @property
    def rectify_step(self) -> int:
        """Step :math:`3K` at which the rectifier forces every silent neuron to fire."""
        return 3 * self.t_max

    @property
    def first_fire_step(self) -> int:
        """Earliest step a neuron may fire: the readout :math:`2K` (``"exact"``), else 0."""
        return self.read_step if self.mode == "exact" else 0

    @property
    def threshold(self) -> float:
        """Firing threshold: :math:`K + 1/2` (``"round"``) or :math:`K + 1` (``"floor"``)."""
        return self.t_max + (0.5 if self.rounding == "round" else 1.0)
