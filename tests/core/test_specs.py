from __future__ import annotations

import dataclasses
import math

import pytest
from conftest import SPEC_EXAMPLES

from snn_encodings.errors import SpecError
from snn_encodings.specs import ALL_SPECS, ICRate


def test_every_spec_has_an_example() -> None:
    covered = {type(example) for example in SPEC_EXAMPLES}
    missing = [cls.__name__ for cls in ALL_SPECS if cls not in covered]
    assert not missing, f"add SPEC_EXAMPLES entries for {missing}"


def test_specs_are_hashable_and_frozen(spec) -> None:
    copy = dataclasses.replace(spec)
    assert copy is not spec and copy == spec and hash(copy) == hash(spec)
    assert {spec: 1}[copy] == 1
    with pytest.raises(AttributeError):
        setattr(spec, dataclasses.fields(spec)[0].name, 3)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"steps": 0}, "ICRate.steps"),
        ({"steps": 2.5}, "ICRate.steps"),
        ({"steps": True}, "ICRate.steps"),
        ({"threshold": -1.0}, "ICRate.threshold"),
        ({"threshold": math.nan}, "ICRate.threshold"),
        ({"threshold": math.inf}, "ICRate.threshold"),
        ({"init": "half"}, "ICRate.init"),
        ({"compensate": 1}, "ICRate.compensate"),
        ({"input_coding": "poisson"}, "ICRate.input_coding"),
        ({"signed": 1}, "ICRate.signed must be a bool or None"),
    ],
)
def test_icrate_spec_rejects_bad_fields(kwargs, fragment) -> None:
    with pytest.raises(SpecError, match=fragment):
        ICRate(**kwargs)
