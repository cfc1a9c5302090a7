"""JSON Schema semantics the grammar keeps exact (issue 15's soundness part).

- a type-specific keyword constrains only its own type (a schema without ``type``
  is the union over the JSON types, each with its own keywords);
- keywords beside anyOf/oneOf apply to every alternative, or the schema is refused;
- const/enum values are filtered by the schema's other keywords;
- oneOf compiles only where its alternatives are provably disjoint, else it is
  refused, unless ``lenient=True`` asks for anyOf semantics.

Every expectation is checked against ``jsonschema`` too, so a wrong table fails.
"""
from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schema_suite import BYTES_VOCAB, FORMAT_CHECKER, accepts, tool_for
from toolprm import grammar as G
from toolprm.grammar import ToolSchemaError


def compiled(schema, lenient=False):
    return G.compile([tool_for(schema)], BYTES_VOCAB, calls="one", lenient=lenient)


def check_language(schema, good, bad, lenient=False):
    g = compiled(schema, lenient)
    for v in good:
        assert jsonschema.Draft202012Validator(schema).is_valid(v), ("table error", schema, v)
        assert accepts(g, v), (schema, v)
    for v in bad:
        if not lenient:
            assert not jsonschema.Draft202012Validator(schema).is_valid(v), ("table error", schema, v)
        assert not accepts(g, v), (schema, v)


OTHERS = ["s", 7, 2.5, None, True, [], {}]  # one value of each JSON type

TYPELESS = [
    ({"maxLength": 2}, ["ab", *OTHERS], ["abc"]),
    ({"minLength": 2}, ["ab", 0, None, [1], {}], ["a", ""]),
    ({"minimum": 1.1}, [1.1, 2, "s", None, [], {}], [0.6, 1, -3]),
    ({"exclusiveMaximum": 3}, [2.9, "abcd", [1, 2, 3, 4]], [3, 4.5]),
    ({"items": {"type": "integer"}}, [[1, 2], [], "s", 3, None, {}], [["a"], [1, "b"]]),
    ({"maxItems": 1}, [[1], "ab", 5, {}], [[1, 2]]),
    ({"required": ["a"]}, [{"a": 1}, [], "x", 0], [{}, {"b": 1}]),
    ({"properties": {"a": {"type": "string"}}}, [{"a": "x"}, {}, 1, "s", [1]], [{"a": 1}]),
    ({"anyOf": [{"type": "integer"}, {"minimum": 2}]}, [1, 2.5, "x", None], [1.5, -0.5]),
]


@pytest.mark.parametrize("schema,good,bad", TYPELESS, ids=[json.dumps(t[0]) for t in TYPELESS])
def test_typeless_keyword_constrains_only_its_type(schema, good, bad):
    check_language(schema, good, bad)


def test_bfcl_any_type_is_no_type():
    g = compiled({"type": "any", "maxLength": 1})  # jsonschema does not know "any"
    assert accepts(g, "a") and accepts(g, 5) and not accepts(g, "ab")


def test_typed_schema_ignores_other_types_keywords():
    # JSON Schema: minimum says nothing about strings.
    check_language({"type": "string", "minimum": 5, "maxLength": 1}, ["a"], ["ab", 7])


def test_root_parameters_without_type_are_an_object():
    """Arguments are always an object: the root keeps reading properties as one."""
    tool = {"name": "t", "parameters": {"properties": {"a": {"type": "integer"}}, "required": ["a"]}}
    (norm,) = G.normalize_tools([tool])
    assert norm.parameters["type"] == "object" and "anyOf" not in norm.parameters


# ------------------------------------------------------------------ siblings of anyOf / oneOf
def test_siblings_apply_to_every_alternative():
    check_language({"minimum": 5, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                   [6, 5, "a"], [3, 4.9, 5.5, None])
    check_language({"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"],
                    "anyOf": [{"required": ["b"]}]}, [{"a": 1, "b": 2}], [{"a": 1}, {"b": 2}])


@pytest.mark.parametrize("schema,where", [
    ({"minimum": 5, "anyOf": [{"minimum": 1}]}, "anyOf[0].minimum"),
    ({"type": "object", "additionalProperties": False, "anyOf": [{"properties": {"a": {}}}]}, "anyOf[0]"),
    ({"type": "object", "properties": {"a": {}}, "anyOf": [{"additionalProperties": False}]}, "anyOf[0]"),
    ({"anyOf": [{"type": "string"}], "oneOf": [{"type": "string"}]}, "x.oneOf"),
    ({"anyOf": [False, False]}, "x.anyOf"),
    (False, "properties.x"),
])
def test_refused_combinations(schema, where):
    with pytest.raises(ToolSchemaError) as e:
        compiled(schema)
    assert e.value.tool == "t" and e.value.path.endswith(where), e.value.path


# ------------------------------------------------------------------ const / enum with siblings
def test_enum_values_filtered_by_other_keywords():
    check_language({"type": "string", "enum": ["a", "abc"], "maxLength": 2}, ["a"], ["abc"])
    check_language({"enum": [1, "abc", None], "maxLength": 2}, [1, None], ["abc"])
    check_language({"const": 3, "minimum": 0}, [3], [4])
    with pytest.raises(ToolSchemaError, match="no const value matches type 'string'"):
        compiled({"type": "string", "const": 5})
    with pytest.raises(ToolSchemaError, match="no enum value satisfies") as e:
        compiled({"enum": ["abc"], "maxLength": 2})
    assert e.value.path.endswith("x.enum")


# ------------------------------------------------------------------ oneOf
DISJOINT = [
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, ["a", 1], [None, 1.5]),
    ({"oneOf": [{"enum": ["a", "b"]}, {"const": "c"}]}, ["a", "c"], ["d"]),
    ({"oneOf": [{"const": 1}, {"type": "string", "maxLength": 1}]}, [1, "x"], [2, "xy"]),
    ({"oneOf": [False, {"type": "string"}, {"type": "null"}]}, ["a", None], [1]),
    ({"oneOf": [{"$ref": "#/$defs/S"}, {"type": "null"}], "$defs": {"S": {"type": "string"}}},
     ["a", None], [1]),
    ({"oneOf": [{"type": ["string", "null"]}, {"type": "array", "items": {"type": "integer"}}]},
     ["a", None, [1]], [["a"], 2]),
]


@pytest.mark.parametrize("schema,good,bad", DISJOINT, ids=[json.dumps(t[0]) for t in DISJOINT])
def test_disjoint_oneof_is_exact(schema, good, bad):
    check_language(schema, good, bad)


OVERLAPPING = [
    {"oneOf": [{"type": "integer"}, {"minimum": 2}]},
    {"oneOf": [{"type": "integer"}, {"type": "number"}]},      # 1 is both
    {"oneOf": [{"const": 1}, {"enum": [1.0, 2]}]},              # 1 == 1.0 in JSON Schema
    {"oneOf": [{"type": "object", "required": ["a"]}, {"type": "object", "required": ["b"]}]},
    {"oneOf": [{}, {"type": "string"}]},
]


@pytest.mark.parametrize("schema", OVERLAPPING, ids=[json.dumps(s) for s in OVERLAPPING])
def test_overlapping_oneof_is_refused_unless_lenient(schema):
    with pytest.raises(ToolSchemaError, match="lenient=True") as e:
        compiled(schema)
    assert e.value.path.endswith("x.oneOf")
    g = compiled(schema, lenient=True)  # anyOf semantics: what any alternative accepts
    anyof = {**{k: v for k, v in schema.items() if k != "oneOf"}, "anyOf": schema["oneOf"]}
    for v in [1, 2, 2.5, "s", None, {"a": 1, "b": 2}]:
        if accepts(g, v):
            assert jsonschema.Draft202012Validator(anyof).is_valid(v), (schema, v)


def test_lenient_is_off_by_default_for_normalize_tools():
    with pytest.raises(ToolSchemaError):
        G.normalize_tools([tool_for(OVERLAPPING[0])])
    (t,) = G.normalize_tools([tool_for(OVERLAPPING[0])], lenient=True)
    assert "anyOf" in t.parameters["properties"]["x"]


# ------------------------------------------------------------------ property: sound on random schemas
_count = st.integers(0, 3)
_num = st.integers(-5, 5) | st.sampled_from([-1.5, 0.5, 2.25])
_KEYWORDS = {
    "minLength": _count, "maxLength": _count, "minimum": _num, "maximum": _num,
    "exclusiveMinimum": _num, "exclusiveMaximum": _num, "minItems": _count, "maxItems": _count,
    "items": st.sampled_from([{"type": "integer"}, {"maxLength": 1}, {}]),
    "required": st.sampled_from([["a"], ["a", "b"]]),
    "properties": st.sampled_from([{"a": {"type": "string"}}, {"a": {"minimum": 0}, "b": {}}]),
    "pattern": st.sampled_from(["^a", "b$", "^(?:ab)*$", "[0-9]"]),
    "format": st.sampled_from(["date", "ipv4", "email"]),
    "enum": st.lists(st.sampled_from(["a", "ab", "2024-01-01", 1, 2.5, None, [1]]), min_size=1, max_size=3),
}
_TYPES = ["string", "integer", "number", "boolean", "null", "array", "object"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-9, 9) | st.sampled_from([-1.5, 0.5, 2.25, 1.0])
    | st.text("ab", max_size=4) | st.sampled_from(["2024-01-01", "a@b.c", "1.2.3.4", "ab\n", "a1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=6)


@st.composite
def keyword_schemas(draw):
    keys = draw(st.lists(st.sampled_from(sorted(_KEYWORDS)), max_size=4, unique=True))
    s = {k: draw(_KEYWORDS[k]) for k in keys}
    if draw(st.booleans()):
        s["type"] = draw(st.sampled_from(_TYPES) | st.lists(st.sampled_from(_TYPES), min_size=1,
                                                             max_size=3, unique=True))
    if draw(st.integers(0, 3)) == 0:
        s = {"anyOf": [s, draw(keyword_schemas())]} if draw(st.booleans()) else \
            {"oneOf": [s, draw(keyword_schemas())]}
    return s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keyword_schemas(), st.lists(json_values, min_size=1, max_size=8))
def test_random_keyword_schemas_accept_only_valid_values(schema, values):
    try:
        g = compiled(schema)
    except ToolSchemaError:
        return  # refusing is allowed; accepting an invalid value is not
    check = jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    for v in values:
        if accepts(g, v):
            assert check.is_valid(v), (schema, v)
