"""Normalized JSON Schema -> automaton nodes."""
from __future__ import annotations

from .calls import CallListNode, CallNode
from .containers import DEFAULT_MAX_ITEMS, ArrayNode, ObjectNode
from .literals import LiteralNode
from .nodes import Node, Union
from .normalize import CALL_MODES, Tool
from .numbers import NumberNode
from .pattern_strings import string_node
from .strings import DEFAULT_MAX_STRING, StringNode

ANY_DEPTH = 3  # nesting allowed inside a schema-less ("any") value


class NodeBuilder:
    """``keep`` (bytes -> bool): whether the vocabulary can write a fixed text (names,
    keys, enum values); texts it cannot are only accepted in their escaped form."""

    def __init__(self, keep=None):
        self.keep = keep
        self._any: dict[int, Node] = {}
        self._bool = LiteralNode([True, False])
        self._null = LiteralNode([None])

    def any_value(self, depth: int = ANY_DEPTH) -> Node:
        """Any JSON value, nested at most ``depth`` levels (bounded, so it terminates)."""
        if depth not in self._any:
            alts: list[Node] = [StringNode(), NumberNode(False), LiteralNode([True, False, None])]
            if depth > 0:
                inner = self.any_value(depth - 1)
                alts += [ArrayNode(inner), ObjectNode({}, [], inner)]
            self._any[depth] = Union(alts)
        return self._any[depth]

    def value(self, s: dict, emit: bool = False) -> Node:
        if "anyOf" in s:
            return Union([self.value(a) for a in s["anyOf"]])
        if "enum" in s:
            return LiteralNode(s["enum"], self.keep)
        t = s.get("type")
        if t is None:
            return self.any_value()
        if t == "string":
            if "pattern" in s or "format" in s:
                return string_node(s)
            lo = s.get("minLength", 0)
            return StringNode(lo, s.get("maxLength", max(DEFAULT_MAX_STRING, lo)))
        if t in ("integer", "number"):
            return NumberNode(t == "integer", s)
        if t == "boolean":
            return self._bool
        if t == "null":
            return self._null
        if t == "array":
            lo = s.get("minItems", 0)
            item = self.value(s["items"]) if "items" in s else self.any_value(ANY_DEPTH - 1)
            return ArrayNode(item, lo, s.get("maxItems", max(DEFAULT_MAX_ITEMS, lo)))
        if t == "object":
            props = {k: self.value(v) for k, v in s.get("properties", {}).items()}
            extra = s.get("additionalProperties", False)
            extra_node = None if extra is False else (
                self.any_value(ANY_DEPTH - 1) if extra is True else self.value(extra))
            return ObjectNode(props, s.get("required", []), extra_node, emit=emit, keep=self.keep)
        raise AssertionError(f"normalized schema has unexpected type {t!r}")

    def call_list(self, tools: list[Tool], calls: str, max_calls: int) -> CallListNode:
        lo, hi = CALL_MODES[calls]
        call = CallNode([t.name for t in tools], [self.value(t.parameters, emit=True) for t in tools],
                        self.keep)
        return CallListNode(call, lo, hi if hi is not None else max_calls)
