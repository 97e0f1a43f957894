"""The encoding records: one per spec class, complete, and the only table the library reads."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from snn_encodings.conversion.rules import Rule, rule_for
from snn_encodings.encoding import (
    Encoding,
    encoding_for,
    encoding_named,
    encoding_notes,
    register_encoding,
    registered_encodings,
    unregister_encoding,
)
from snn_encodings.functional import neuron_functions
from snn_encodings.specs import ALL_SPECS, ICRate, Quartz, Radix, Spec


@dataclass(frozen=True, slots=True, kw_only=True)
class _Unregistered(Spec):
    steps: int = 2


def test_every_spec_has_exactly_one_record() -> None:
    assert {record.spec_type for record in registered_encodings()} == set(ALL_SPECS)
    for spec_type in ALL_SPECS:
        assert encoding_for(spec_type) is encoding_for(spec_type())


def test_unregistered_spec_raises_type_error_listing_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"ICRate, Quartz, Radix\), got _Unregistered"):
        encoding_for(_Unregistered())
    with pytest.raises(TypeError, match="got int"):
        rule_for(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got _Unregistered"):
        neuron_functions(_Unregistered())


@pytest.mark.parametrize("spec", [ICRate(steps=4), Radix(steps=3), Quartz(t_max=4)], ids=repr)
def test_record_references_resolve_to_what_the_library_uses(spec: Spec) -> None:
    record = encoding_for(spec)
    rule = record.load("rule")
    assert issubclass(rule, Rule) and type(rule_for(spec)) is rule
    functions = neuron_functions(spec)
    assert functions == (record.load("initial_state"), record.load("step"))
    x = torch.full((1, 3), 0.5)
    assert record.load("encode")(x, spec).shape[0] == spec.steps_per_layer
    assert callable(record.load("decode"))
    if record.netx is None:
        assert record.netx_refusal.startswith("export.netx:")
    else:
        assert callable(record.load("netx"))
    if record.closed_form is not None:
        assert callable(record.load("closed_form"))


def test_load_names_a_missing_reference() -> None:
    with pytest.raises(LookupError, match="Radix encoding has no netx"):
        encoding_for(Radix).load("netx")


def test_names_and_notes_are_read_from_the_records() -> None:
    assert encoding_named("QUARTZ").spec_type is Quartz
    with pytest.raises(LookupError, match=r"\['icrate', 'quartz', 'radix'\]"):
        encoding_named("lif")
    notes = encoding_notes("not_rate_trainable")
    assert set(notes) == {Radix, Quartz} and "fires exactly once" in notes[Quartz]
    with pytest.raises(AttributeError, match="no field 'colour'"):
        encoding_notes("colour")


def test_register_encoding_checks_its_argument() -> None:
    with pytest.raises(TypeError, match="expected an Encoding"):
        register_encoding(encoding_for(Radix).spec_type)  # type: ignore[arg-type]
    bad = Encoding(
        spec_type=int,  # type: ignore[arg-type]
        initial_state=print,
        step=print,
        encode=print,  # type: ignore[arg-type]
        decode=print,  # type: ignore[arg-type]
        rule=Rule,
    )
    with pytest.raises(TypeError, match="spec_type must be a Spec subclass"):
        register_encoding(bad)


def test_unregister_encoding_names_an_unknown_spec() -> None:
    with pytest.raises(TypeError, match="got _Unregistered"):
        unregister_encoding(_Unregistered)


def test_register_rule_replaces_the_rule_in_the_record() -> None:
    from snn_encodings.conversion.rules import ICRateRule, register_rule

    class Louder(ICRateRule):
        pass

    register_rule(ICRate, Louder)
    try:
        assert encoding_for(ICRate).rule is Louder and type(rule_for(ICRate())) is Louder
    finally:
        register_rule(ICRate, ICRateRule)
    assert type(rule_for(ICRate())) is ICRateRule
    with pytest.raises(TypeError, match="got _Unregistered"):
        register_rule(_Unregistered, Louder)
