"""The official JSON-Schema-Test-Suite (draft 2020-12) as a soundness test.

For every test schema the grammar compiles, no instance the suite calls invalid may
be accepted. The valid instances it rejects must be exactly the documented limits
below (README, "Schema coverage"): a new rejection fails, and so does a limit that
no longer shows (update the list and the README together). The suite comes from
the pinned ``jsonschema`` sdist that ``make suite`` downloads (schema_suite.py).
"""
from __future__ import annotations

import os

import pytest

import schema_suite
from conftest import missing_download

# Documented limits (README, "Schema coverage") -> the suite's valid instances they reject.
CLOSED_OBJECTS = "an object with declared properties takes no other keys unless additionalProperties allows them"
NUMBER_SPELLING = "integers are written without a fraction; a const/enum number matches only its own spelling"
KEY_ORDER = "a const/enum object matches only in its own key order"
FORMAT_ASSERTED = "format is enforced (draft 2020-12 makes it an annotation by default)"
LIMITS = {
    "additionalProperties/additionalProperties are allowed by default: additional properties are allowed":
        CLOSED_OBJECTS,
    "anyOf/anyOf complex types: both anyOf valid (complex)": CLOSED_OBJECTS,
    "properties/object properties validation: doesn't invalidate other properties": CLOSED_OBJECTS,
    "const/const with object: same object with different property order is valid": KEY_ORDER,
    "const/const with 0 does not match other zero-like types: float zero is valid": NUMBER_SPELLING,
    "const/const with 1 does not match true: float one is valid": NUMBER_SPELLING,
    "const/const with -2.0 matches integer and float types: integer -2 is valid": NUMBER_SPELLING,
    "const/float and integers are equal up to 64-bit representation limits: float is valid": NUMBER_SPELLING,
    "enum/enum with 0 does not match false: float zero is valid": NUMBER_SPELLING,
    "enum/enum with [0] does not match [false]: [0.0] is valid": NUMBER_SPELLING,
    "enum/enum with 1 does not match true: float one is valid": NUMBER_SPELLING,
    "enum/enum with [1] does not match [true]: [1.0] is valid": NUMBER_SPELLING,
    "type/integer type matches integers: a float with zero fractional part is an integer": NUMBER_SPELLING,
    **{f"format/{f} format: invalid {f} string is only an annotation by default": FORMAT_ASSERTED
       for f in ("email", "ipv4", "ipv6", "date", "date-time", "time", "uri", "uuid")},
}
MIN_COMPILED = 106  # groups that compile (jsonschema 4.26.0): coverage must not shrink


@pytest.fixture(scope="module")
def suite():
    if not os.path.exists(schema_suite.SDIST):
        missing_download(f"the jsonschema {schema_suite.JSONSCHEMA_SDIST_VERSION} sdist", "run `make suite`")
    return schema_suite.run()


def test_no_invalid_instance_is_accepted(suite):
    print("\n" + suite.summary())
    assert suite.invalid_accepted == []


def test_valid_instances_rejected_are_documented_limits(suite):
    assert sorted(set(suite.valid_rejected) - set(LIMITS)) == [], "undocumented rejections"
    assert sorted(set(LIMITS) - set(suite.valid_rejected)) == [], "a limit no longer shows: update LIMITS"


def test_coverage_does_not_shrink(suite):
    assert len(suite.compiled) >= MIN_COMPILED, suite.summary()
    # Every refusal names the tool and a JSON path under the parameter.
    assert all(msg.startswith("tool 't' at $[0].parameters") for msg in suite.refused.values())


def test_lenient_oneof_relaxes_only_oneof(suite):
    """lenient=True reads overlapping oneOfs as anyOf: what it accepts beyond the
    strict grammar lies only in groups the strict grammar refuses as oneOf."""
    lenient = schema_suite.run(lenient=True)
    assert set(suite.compiled) <= set(lenient.compiled)
    for item in lenient.invalid_accepted:
        group = item.split(": ")[0]
        assert "oneOf" in suite.refused.get(group, ""), item
