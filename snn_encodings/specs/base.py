"""The spec base class and the field validators every spec uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from snn_encodings.errors import SpecError

__all__ = ["Spec", "check_choice", "check_float", "check_int"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """Base of every neuron spec: a frozen, hashable record of an encoding's parameters.

    Subclasses are frozen, slotted, keyword-only dataclasses of Python scalars and strings.
    They validate every field in ``__post_init__`` and expose derived numbers as properties.
    """

    @property
    def name(self) -> str:
        """Short name of the encoding, e.g. ``"radix"``."""
        return type(self).__name__.lower()

    @property
    def steps_per_layer(self) -> int:
        """Length of one layer's time window in steps (the tensor's ``T``)."""
        raise NotImplementedError

    @property
    def layer_latency(self) -> int:
        """Steps between a layer's first input and its output window (0 for rate coding)."""
        raise NotImplementedError


def _where(spec: Any, field: str) -> str:
    return f"{type(spec).__name__}.{field}"


def check_int(
    spec: Any, field: str, *, minimum: int | None = None, maximum: int | None = None
) -> None:
    """Raise :class:`SpecError` unless ``spec.<field>`` is an int (not a bool) within bounds."""
    value = getattr(spec, field)
    bounds = _bounds_text(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{_where(spec, field)} must be an integer{bounds}, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SpecError(f"{_where(spec, field)} must be an integer{bounds}, got {value!r}")


def check_float(
    spec: Any,
    field: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    open_maximum: bool = False,
) -> None:
    """Raise :class:`SpecError` unless ``spec.<field>`` is a finite real number within bounds.

    Ints are accepted and stored as given; bools, NaN and infinities are rejected.
    """
    value = getattr(spec, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{_where(spec, field)} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(f"{_where(spec, field)} must be finite, got {value!r}")
    if positive and value <= 0:
        raise SpecError(f"{_where(spec, field)} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{_where(spec, field)} must be >= {minimum}, got {value!r}")
    if maximum is not None and (value >= maximum if open_maximum else value > maximum):
        relation = "<" if open_maximum else "<="
        raise SpecError(f"{_where(spec, field)} must be {relation} {maximum}, got {value!r}")


def check_choice(spec: Any, field: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`SpecError` unless ``spec.<field>`` is one of ``choices``."""
    value = getattr(spec, field)
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise SpecError(f"{_where(spec, field)} must be one of {options}, got {value!r}")


def _bounds_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
