"""Completeness against hypothesis-jsonschema: the valid instances it generates for
hand-written, BFCL and random schemas are accepted by the grammar, unless they fall
outside a documented limit (README, "Schema coverage"; ``outside_limits`` below).

Byte walks cover many schemas cheaply; token walks cover the three tokenizers
(the real SmolLM2 one, a byte-level BPE and a SentencePiece-style one).
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from schema_suite import BYTES_VOCAB, accepts, tool_for
from test_schema_keywords import keyword_schemas
from toolprm import grammar as G
from toolprm.grammar import ToolSchemaError
from toolprm.grammar.build import ANY_DEPTH
from toolprm.grammar.containers import DEFAULT_MAX_ITEMS
from toolprm.grammar.numbers import MAX_FRAC_DIGITS, MAX_INT_DIGITS
from toolprm.grammar.strings import DEFAULT_MAX_KEY, DEFAULT_MAX_STRING

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])

HAND_WRITTEN = [
    {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}},
     "required": ["city"], "additionalProperties": False},
    {"type": "object", "properties": {
        "items": {"type": "array", "maxItems": 5, "items": {
            "type": "object", "properties": {"id": {"type": "integer"}, "qty": {"type": "number", "exclusiveMinimum": 0}},
            "required": ["id"], "additionalProperties": False}},
        "note": {"type": ["string", "null"]}},
     "required": ["items"], "additionalProperties": False},
    {"type": "object", "properties": {
        "v": {"maxLength": 3, "minimum": 0, "maxItems": 2},
        "w": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "boolean"}}]},
        "k": {"anyOf": [{"type": "integer"}, {"minimum": 2}]},
        "e": {"enum": [1, "a", None, [1, 2]], "maxItems": 1}},
     "additionalProperties": False},
    {"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {  # hypothesis-jsonschema has no uuid strategy: not here
        "when": {"type": "string", "format": "date-time"}, "day": {"format": "date"},
        "at": {"type": "string", "format": "time"}, "mail": {"type": "string", "format": "email"},
        "ip": {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]},
        "site": {"type": "string", "format": "uri"}, "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
        "tag": {"type": "string", "pattern": "ab+", "maxLength": 12}},
     "required": ["code"], "additionalProperties": False},
]


def _bfcl_schemas(n: int = 12) -> list[dict]:
    """Normalized parameters of some BFCL tools (plain JSON Schema: dict -> object, ...)."""
    from toolprm.bfcl import load_cases

    out = []
    for cat in ("simple_python", "multiple", "parallel_multiple", "live_simple"):
        for case in load_cases(cat, limit=n // 4):
            out += [t.parameters for t in G.normalize_tools(case.tools)]
    return out


BFCL = _bfcl_schemas()


def _closed(s):
    """Close every object with declared properties, as the grammar reads them (README:
    such an object takes no other keys), so that the generator agrees."""
    if isinstance(s, list):
        return [_closed(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {k: _closed(v) for k, v in s.items()}
    if "properties" in s and "additionalProperties" not in s:
        out["additionalProperties"] = False
    return out


def outside_limits(v) -> str | None:
    """The documented limit a parameter's value falls outside, or None. Nesting is
    capped at ANY_DEPTH, the least a schema-less position allows (conservative: a
    deeper typed value is skipped too)."""
    def depth(x):
        if isinstance(x, list):
            return 1 + max(map(depth, x), default=0)
        if isinstance(x, dict):
            return 1 + max(map(depth, x.values()), default=0)
        return 0
    if depth(v) > ANY_DEPTH:
        return "schema-less values nest at most ANY_DEPTH levels"
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, bool) or x is None:
            continue
        if isinstance(x, (int, float)):
            text = json.dumps(x)
            whole, _, frac = text.lstrip("-").partition(".")
            if "e" in text or len(whole) > MAX_INT_DIGITS or len(frac) > MAX_FRAC_DIGITS:
                return "number length / exponent"
        elif isinstance(x, str):
            if len(x) > DEFAULT_MAX_STRING:
                return "string without maxLength longer than DEFAULT_MAX_STRING"
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return "lone surrogate"
        elif isinstance(x, list):
            if len(x) > DEFAULT_MAX_ITEMS:
                return "array without maxItems longer than DEFAULT_MAX_ITEMS"
            stack += x
        else:
            if len(x) > DEFAULT_MAX_ITEMS or any(len(k) > DEFAULT_MAX_KEY for k in x):
                return "object with too many or too long free keys"
            stack += list(x) + list(x.values())
    return None


@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_generated_instances_are_accepted(data):
    schema = data.draw(st.sampled_from(HAND_WRITTEN + BFCL), label="schema")
    g = G.compile([{"name": "t", "parameters": schema}], BYTES_VOCAB, calls="one")
    args = data.draw(from_schema(schema), label="arguments")
    assume(not any(map(outside_limits, args.values())))
    text = json.dumps([{"name": "t", "arguments": args}]).encode()
    assert g.start().advance_bytes(text).is_final, text


@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_generated_instances_of_random_schemas_are_accepted(data):
    schema = _closed(data.draw(keyword_schemas(), label="schema"))
    try:
        g = G.compile([tool_for(schema)], BYTES_VOCAB, calls="one")
    except ToolSchemaError:
        assume(False)  # refused: nothing to accept
    value = data.draw(from_schema(schema), label="value")
    assume(outside_limits(value) is None)
    assert accepts(g, value), (schema, value)


@pytest.mark.parametrize("tok_name", ["smollm2", "bpe", "sentencepiece"])
@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_generated_instances_are_accepted_token_by_token(request, tok_name, data):
    tok = request.getfixturevalue(f"{tok_name}_tokenizer")
    schema = data.draw(st.sampled_from(HAND_WRITTEN), label="schema")
    g = G.compile([{"name": "t", "parameters": schema}], tok, calls="one")
    args = data.draw(from_schema(schema), label="arguments")
    assume(not any(map(outside_limits, args.values())))
    text = json.dumps([{"name": "t", "arguments": args}])
    ids = tok.encode(text, add_special_tokens=False)
    spelled = b"".join(g.vocab.token_bytes[i] or b"" for i in ids)
    # SmolLM2's GGUF vocabulary lacks a few bytes, so its tokenizer drops them (test_grammar).
    assume(spelled.lstrip() == text.encode())
    state = g.start()
    for t in ids:
        assert state.allowed_mask()[t], (text, state.text)
        state = state.advance(t)
    assert state.is_final, text
