"""When two JSON Schemas can match no common value: what makes a oneOf exact.

A oneOf whose alternatives are pairwise disjoint means the same as anyOf (a value
matching one alternative matches no other), so the grammar can enforce it as a
union. ``Shape`` over-approximates what a schema matches: a set of JSON kinds, or
a finite set of literal values (enum/const). Disjoint shapes prove disjoint
schemas; overlapping shapes prove nothing, and the caller refuses the oneOf.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

# JSON kinds. integer and number are one kind: 1 and 1.0 are the same JSON Schema value.
KINDS = frozenset({"string", "number", "boolean", "null", "array", "object"})
_KIND = {"integer": "number", "float": "number", "dict": "object", "tuple": "array"}


def kind_of(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


_TAG_KIND = {"s": "string", "n": "number", "b": "boolean", "z": "null", "a": "array", "o": "object"}


def _canon(x: Any) -> list:
    """A tagged form of a JSON value; equal for values JSON Schema calls equal."""
    if isinstance(x, bool):
        return ["b", x]
    if x is None:
        return ["z"]
    if isinstance(x, (int, float)):
        return ["n", repr(int(x) if isinstance(x, float) and x.is_integer() else x)]
    if isinstance(x, str):
        return ["s", x]
    if isinstance(x, list):
        return ["a", [_canon(i) for i in x]]
    return ["o", sorted([k, _canon(i)] for k, i in x.items())]


def value_key(v: Any) -> str:
    """Equal keys for values JSON Schema calls equal (1 == 1.0; true != 1; key order
    of objects does not matter)."""
    return json.dumps(_canon(v))


@dataclass(frozen=True)
class Shape:
    """kinds: the JSON kinds a value may have; values: if not None, the value's key is
    one of these (a finite set, all within ``kinds``)."""
    kinds: frozenset
    values: frozenset | None = None

    def meet(self, other: "Shape") -> "Shape":
        kinds = self.kinds & other.kinds
        if self.values is None and other.values is None:
            return Shape(kinds)
        vals = [v for v in (self.values, other.values) if v is not None]
        keys = vals[0] & vals[1] if len(vals) == 2 else vals[0]
        return Shape(kinds, frozenset(k for k in keys if _key_kind(k) in kinds))

    def join(self, other: "Shape") -> "Shape":
        if self.values is None or other.values is None:
            return Shape(self.kinds | other.kinds)
        return Shape(self.kinds | other.kinds, self.values | other.values)

    @property
    def empty(self) -> bool:
        return not self.kinds or self.values is not None and not self.values


ANY = Shape(KINDS)
NOTHING = Shape(frozenset())


def _key_kind(key: str) -> str:
    return _TAG_KIND[json.loads(key)[0]]


def shape(s: Any, resolve: Callable[[str], Any], depth: int = 0) -> Shape:
    """An over-approximation of the values schema ``s`` matches. ``resolve`` maps a
    $ref to its target schema (or None when unknown)."""
    if s is True or s == {}:
        return ANY
    if s is False:
        return NOTHING
    if not isinstance(s, dict) or depth > 16:
        return ANY
    out = ANY
    t = s.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        if "any" not in names:
            out = Shape(frozenset(_KIND.get(n, n) for n in names if isinstance(n, str)) & KINDS)
    if "const" in s:
        out = out.meet(_literals([s["const"]]))
    if isinstance(s.get("enum"), list):
        out = out.meet(_literals(s["enum"]))
    for kw in ("anyOf", "oneOf"):
        if isinstance(s.get(kw), list):
            alts = NOTHING
            for a in s[kw]:
                alts = alts.join(shape(a, resolve, depth + 1))
            out = out.meet(alts)
    if isinstance(s.get("$ref"), str):
        target = resolve(s["$ref"])
        if target is not None:
            out = out.meet(shape(target, resolve, depth + 1))
    return out


def _literals(values: list) -> Shape:
    return Shape(frozenset(kind_of(v) for v in values), frozenset(value_key(v) for v in values))


def disjoint(a: Shape, b: Shape) -> bool:
    return a.meet(b).empty
