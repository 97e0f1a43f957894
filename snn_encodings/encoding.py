"""One registered :class:`Encoding` record per spec class: everything that makes an encoding.

The rest of the library (the step loop, conversion, export, the framework adapters, the command
line) asks :func:`encoding_for` what an encoding does; none of it tests a spec's name or class.

Dependency direction (checked by ``tests/test_import_graph.py``, deferred imports included)::

    specs <- encoding <- functional <- coding <- conversion <- export, adapters, cli

This module sits just above ``specs`` and imports nothing else of the library. A record names
each part of its encoding either as the object itself or as a *reference*, a
``"module:attribute"`` string; :meth:`Encoding.load` imports a reference on first use. The
library's own records use references for every part (their step functions, coders, rules,
closed forms and lowerings all live above this module), so importing it never imports
functional, conversion, export or a framework, and ``functional``'s step loop can read the
table without an import cycle. A test or a plugin can register objects directly.

Adding an encoding (a test can do all of it without touching a library file; see
``tests/test_fourth_encoding.py``):

1. a frozen spec dataclass subclassing :class:`~snn_encodings.specs.base.Spec`, with
   ``steps_per_layer`` and ``layer_latency``;
2. its pure neuron: a ``State`` NamedTuple, ``initial_state(spec, like, *, v0=None)`` and
   ``step(current, state, spec, /, *, surrogate=None) -> (spikes, state)``;
3. its input encoder ``encode(x, spec) -> (T, B, *)`` and decoder;
4. a :class:`~snn_encodings.conversion.rules.base.Rule` subclass (twin, calibration,
   ``encode_input``, ``bias_currents``, ``neuron_layer``, ``decode_output``);
5. one ``register_encoding(Encoding(...))`` naming all of the above, and either a netx lowering
   or the reason netx refuses it (``netx_refusal``), plus the NIR and training notes.

Conversion, evaluation, export and the framework adapters then ask the record.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from snn_encodings.specs import ICRate, Quartz, Radix
from snn_encodings.specs.base import Spec

__all__ = [
    "Encoding",
    "encoding_for",
    "encoding_named",
    "encoding_notes",
    "register_encoding",
    "registered_encodings",
    "unregister_encoding",
]

Readout = Literal["spikes", "membrane"]
Reference = Callable[..., Any] | type | str
"""An object, or the ``"module:attribute"`` string that names it."""


def _spike_readout(spec: Any) -> Readout:
    return "spikes"


@dataclass(frozen=True, kw_only=True, eq=False)
class Encoding:
    """Everything the library needs to know about one encoding, keyed by its spec class.

    The fields marked *reference* hold the object or its ``"module:attribute"`` name; read
    them with :meth:`load`.

    Attributes:
        spec_type: the spec dataclass this record describes.
        initial_state: (reference) ``initial_state(spec, like, *, v0=None) -> State`` for
            one step's shape ``like`` ``(B, *)``.
        step: (reference) ``step(current, state, spec, /, *, surrogate=None, **options) ->
            (spikes, state)``; currents and spikes ``(B, *)``.
        encode: (reference) ``encode(x, spec) -> (T, B, *)`` input spikes or currents,
            ``T = spec.steps_per_layer``.
        decode: (reference) ``decode(spikes, spec, **readout) -> (B, *)`` values of an
            output window.
        rule: (reference) the conversion hooks, a ``Rule`` subclass: twin, calibration and
            quantisation, window timing, readout.
        closed_form: (reference) the loop-free value path the rule's ``fast_forward`` uses,
            where one exists, else ``None``.
        kernel: CUDA source file of its CuPy multi-step kernel under
            ``snn_encodings.adapters.spikingjelly.kernels``, or ``None``.
        netx: (reference) ``lower(network, reset) -> (IntNetwork, layer_reports, notes)``
            building the netx layers, or ``None`` when netx refuses the encoding.
        netx_refusal: why netx cannot express the encoding and what to do instead (used
            when ``netx`` is ``None``).
        readout: ``readout(spec) -> "spikes" | "membrane"``: how the exported output layer is
            read (count of spikes, or the compensated count plus residual membrane).
        nir_export: whether :func:`snn_encodings.export.nir` writes a best-effort graph.
        nir_limit: why NIR's neurons cannot express this neuron faithfully.
        not_rate_trainable: why a spike-count (rate) loss cannot train the neuron and what to
            train on instead, or ``None`` when rate losses work.
        window_note: why a run shorter than the window ``spec.steps_per_layer`` loses the
            neuron's output, or ``None`` when a short run is still meaningful.
        scores: (reference) ``scores(spikes, spec, *, v_final=None, v0=None) -> (B, K)``: an
            output layer's time-first spike record ``(T, B, K)`` read as class scores (what the
            adapters' ``class_scores`` calls); ``None`` falls back to ``decode``.
        demo_variants: ``demo_variants(lengths) -> [(label, spec), ...]``: the specs the
            command line's demo converts for each window length in ``lengths``.
        demo_lengths: the demo option that gives those lengths (``"steps"`` by default).
    """

    spec_type: type[Spec]
    initial_state: Reference
    step: Reference
    encode: Reference
    decode: Reference
    rule: Reference
    closed_form: Reference | None = None
    kernel: str | None = None
    netx: Reference | None = None
    netx_refusal: str = ""
    readout: Callable[[Any], Readout] = _spike_readout
    nir_export: bool = False
    nir_limit: str = (
        "NIR's neuron nodes reset to v_reset and carry no initial state or time counter"
    )
    not_rate_trainable: str | None = None
    window_note: str | None = None
    scores: Reference | None = None
    demo_variants: Callable[[Sequence[int]], list[tuple[str, Spec]]] | None = None
    demo_lengths: str = "steps"

    @property
    def name(self) -> str:
        """Short name of the encoding (the spec class name in lower case, e.g. ``"radix"``)."""
        return self.spec_type.__name__.lower()

    def load(self, field: str) -> Any:
        """The object a reference field (``step``, ``encode``, ``rule``, ``netx``, ...) names.

        Raises:
            LookupError: if the field is empty for this encoding.
        """
        reference = getattr(self, field)
        if reference is None:
            raise LookupError(f"the {self.spec_type.__name__} encoding has no {field}")
        return _resolve(reference) if isinstance(reference, str) else reference

    def demo(self, lengths: Sequence[int]) -> list[tuple[str, Spec]]:
        """The demo's ``(label, spec)`` pairs for ``lengths`` (one default spec per length)."""
        if self.demo_variants is not None:
            return self.demo_variants(lengths)
        return [(self.name, self.spec_type(steps=n)) for n in lengths]  # type: ignore[call-arg]


@functools.cache
def _resolve(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


_RECORDS: dict[type[Spec], Encoding] = {}


def register_encoding(record: Encoding) -> Encoding:
    """Make ``record`` the description of ``record.spec_type`` (replacing an earlier one).

    Returns:
        ``record``, so a module can keep it: ``MINE = register_encoding(Encoding(...))``.
    Raises:
        TypeError: if ``record`` is not an :class:`Encoding` of a :class:`Spec` subclass.
    """
    if not isinstance(record, Encoding):
        raise TypeError(f"register_encoding: expected an Encoding, got {type(record).__name__}")
    if not (isinstance(record.spec_type, type) and issubclass(record.spec_type, Spec)):
        raise TypeError(
            f"register_encoding: spec_type must be a Spec subclass, got {record.spec_type!r}"
        )
    _RECORDS[record.spec_type] = record
    return record


def unregister_encoding(spec_type: type[Spec]) -> None:
    """Forget the record of ``spec_type`` (e.g. a test's toy encoding, after the test).

    Raises:
        TypeError: if ``spec_type`` has no record.
    """
    del _RECORDS[encoding_for(spec_type).spec_type]


def encoding_for(spec: Spec | type[Spec]) -> Encoding:
    """The record of ``spec`` (an instance or its class).

    Raises:
        TypeError: if no encoding is registered for it, listing the registered ones.
    """
    spec_type = spec if isinstance(spec, type) else type(spec)
    record = _RECORDS.get(spec_type)
    if record is None:
        known = ", ".join(sorted(t.__name__ for t in _RECORDS))
        raise TypeError(
            f"expected a neuron spec of a registered encoding ({known}), got "
            f"{spec_type.__name__}; register one with snn_encodings.encoding.register_encoding"
        )
    return record


def encoding_named(name: str) -> Encoding:
    """The record whose name (the spec class name, any case) is ``name``.

    Raises:
        LookupError: for an unknown name, listing the known ones.
    """
    for record in _RECORDS.values():
        if record.name == name.lower():
            return record
    known = sorted(record.name for record in _RECORDS.values())
    raise LookupError(f"unknown encoding {name!r}; choose one of {known}")


def registered_encodings() -> tuple[Encoding, ...]:
    """Every registered record, in registration order."""
    return tuple(_RECORDS.values())


class _Notes(Mapping[type[Spec], str]):
    """Live read-only view ``spec class -> text`` of one optional text field of the records."""

    def __init__(self, field: str) -> None:
        self._field = field

    def _items(self) -> dict[type[Spec], str]:
        return {
            spec_type: text
            for spec_type, record in _RECORDS.items()
            if (text := getattr(record, self._field))
        }

    def __getitem__(self, key: type[Spec]) -> str:
        return self._items()[key]

    def __iter__(self) -> Iterator[type[Spec]]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


def encoding_notes(field: str) -> Mapping[type[Spec], str]:
    """A live mapping ``spec class -> record.<field>`` over the records where it is set.

    For example ``encoding_notes("not_rate_trainable")`` maps the encodings whose neurons a
    spike-count loss cannot train to the reason.
    """
    if field not in Encoding.__dataclass_fields__:
        raise AttributeError(f"Encoding has no field {field!r}")
    return _Notes(field)


# --- the library's encodings ------------------------------------------------------------------
def _icrate_readout(spec: ICRate) -> Readout:
    return "membrane" if spec.compensate else "spikes"


def _icrate_demo(lengths: Sequence[int]) -> list[tuple[str, Spec]]:
    return [
        (
            f"icrate init={init}{' +comp' if compensate else ''}",
            ICRate(steps=n, init=init, compensate=compensate),
        )
        for n in lengths
        for init in ("zero", "ann", "data")
        for compensate in (False, True)
    ]


def _radix_demo(lengths: Sequence[int]) -> list[tuple[str, Spec]]:
    return [
        (f"radix {mode}", Radix(steps=n, mode=mode)) for n in lengths for mode in ("exact", "paper")
    ]


def _quartz_demo(lengths: Sequence[int]) -> list[tuple[str, Spec]]:
    return [
        (f"quartz {mode}", Quartz(t_max=n, mode=mode, analytic=True))
        for n in lengths
        for mode in ("exact", "paper")
    ]


def _library_parts(name: str, rule: str) -> dict[str, str]:
    """References to the parts of the library's encoding ``name`` that follow its file layout:
    ``functional/<name>.py``, ``coding/<name>.py``, ``conversion/rules/<name>.py`` and the
    kernel ``<name>.cu``."""
    return {
        "initial_state": f"snn_encodings.functional.{name}:{name}_initial_state",
        "step": f"snn_encodings.functional.{name}:{name}_step",
        "encode": f"snn_encodings.coding.{name}:encode_{name}",
        "decode": f"snn_encodings.coding.{name}:decode_{name}",
        "rule": f"snn_encodings.conversion.rules.{name}:{rule}",
        "kernel": f"{name}.cu",
        "scores": f"snn_encodings.coding.{name}:{name}_scores",
    }


register_encoding(
    Encoding(
        spec_type=ICRate,
        **_library_parts("icrate", "ICRateRule"),
        netx="snn_encodings.export.icrate_netx:lower_icrate",
        readout=_icrate_readout,
        nir_export=True,
        nir_limit=(
            "its neurons reset by subtraction and start from an initial membrane v0, while NIR's "
            "IF/LIF nodes reset to v_reset and have no initial state, so spike counts would change"
        ),
        demo_variants=_icrate_demo,
    )
)

register_encoding(
    Encoding(
        spec_type=Radix,
        **_library_parts("radix", "RadixRule"),
        netx_refusal=(
            "export.netx: radix cannot be exported to netx: its bit-serial output needs reset by "
            "subtraction plus doubling of the membrane (or a time-varying threshold), while "
            "Lava's CUBA neuron only decays, resets to zero at a fixed threshold and cannot send "
            "graded spikes from a file. The nearest faithful construction, iDecay=4096 "
            "vDecay=2048 with LSB-first inputs, integrates radix inputs but does not emit radix "
            "spikes; export the network with the IC-rate encoding instead"
        ),
        nir_limit=(
            "its neurons are bit-serial accumulators: they fire on the membrane's least "
            "significant digit, subtract on a spike and leak by exactly 1/base per step; NIR's "
            "neurons are continuous-time ODEs (each importer picks dt) that reset to v_reset"
        ),
        not_rate_trainable=(
            "radix neurons emit the base-r digits of their value, so the spike count is a digit "
            "sum, not monotonic in the value, and the exact neuron emits a window's value in the "
            "next window (pipelined), so a rate loss over one window has no gradient (exact "
            "mode) or one that does not follow the value (paper mode); put the loss on the "
            "value the digits encode (class_scores / coding.decode_radix), or fine-tune the ANN "
            "twin with snn_encodings.finetune"
        ),
        window_note=(
            "a radix neuron emits a value's digits over one window of steps * (base - 1) steps "
            "(and the exact neuron emits it one window later), so a shorter run loses digits"
        ),
        demo_variants=_radix_demo,
        demo_lengths="radix_steps",
    )
)

register_encoding(
    Encoding(
        spec_type=Quartz,
        **_library_parts("quartz", "QuartzRule"),
        closed_form="snn_encodings.conversion.quartz_fast:quartz_fast_forward",
        netx_refusal=(
            "export.netx: Quartz cannot be exported faithfully to netx. Its ramp (iDecay=0, "
            "vDecay=0), readout (a clock channel with per-neuron weight 1 - sum(w) - bias, "
            "delayed to step 2K) and bias spikes (delayed clock synapses) are expressible, but "
            "two of its rules are not: (1) fire once: after a spike the Quartz neuron ignores the "
            "rest of its window, while Lava keeps u (only v resets) and integrates later inputs; "
            "a dense_rec self-weight removes at most 256 file units once, so a neuron that fires "
            "during the encode phase (u up to scale * sum of its positive weights) fires again; "
            "(2) the rectifier: forcing exactly the still-silent neurons to fire at step 3K "
            "needs an input larger than theta minus their membrane, which is unbounded below (it "
            "is K times the pre-activation), while the same input must not re-fire a neuron "
            "that fired one step earlier (membrane 0); a fixed weight cannot do both, and CUBA "
            "has no state-dependent gate. The exact mode (the default) adds a third: no spike "
            "before the readout step 2K, a time-varying threshold that CUBA's fixed vth cannot "
            "express. Export the network with the IC-rate encoding instead"
        ),
        nir_limit=(
            "its neurons integrate a persistent ramp over fixed phases and fire at most once per "
            "window; NIR has no phases, no refractoriness and no fire-once neuron"
        ),
        not_rate_trainable=(
            "a Quartz neuron fires exactly once per window (the rectifier fires every neuron "
            "still silent at step 3K), so its spike count is constant and a loss on spike "
            "counts or rates has no gradient; put the loss on the value its spike time encodes "
            "(class_scores / coding.decode_quartz), or fine-tune the ANN twin with "
            "snn_encodings.finetune"
        ),
        window_note=(
            "a Quartz neuron can only fire from the readout step 2K on (exact mode) and every "
            "silent neuron fires at the rectifier step 3K, so a shorter run has no spikes and "
            "no gradient"
        ),
        demo_variants=_quartz_demo,
        demo_lengths="t_max",
    )
)
