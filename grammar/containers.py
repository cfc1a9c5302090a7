"""JSON containers: ArrayNode and ObjectNode (declared keys in any order, each at most
once, plus optional additionalProperties keys), with their phases named."""
from __future__ import annotations

from enum import IntEnum

from .literals import key_trie
from .nodes import COLON, COMMA, DONE, LBRACE, LBRACKET, PUSH, QUOTE, RBRACE, RBRACKET, SPACE, STAY, Node, \
    merge_cands
from .strings import FreeKeyNode

DEFAULT_MAX_ITEMS = 64     # arrays without maxItems; free keys per object


class ArrayPhase(IntEnum):
    BEFORE_OPEN = 0         # before '['
    AFTER_OPEN = 1          # after '['
    IN_ITEM = 2
    AFTER_ITEM = 3
    AFTER_COMMA = 4
    AFTER_COMMA_SPACE = 5   # after ', '


class ArrayNode(Node):
    """Frame: (node, phase, count); ``phase`` is an ArrayPhase, ``count`` the items
    completed."""
    __slots__ = ("item", "min", "max")

    def __init__(self, item: Node, min_items: int = 0, max_items: int = DEFAULT_MAX_ITEMS):
        self.item, self.min, self.max = item, min_items, max_items

    def init(self):
        return [(self, ArrayPhase.BEFORE_OPEN, 0)]

    def cands(self, frame):
        phase = frame[1]
        if phase == ArrayPhase.BEFORE_OPEN:
            return frozenset(b"["), False
        if phase == ArrayPhase.AFTER_OPEN:
            return merge_cands(frozenset(b"]"), self.item.first()), False
        if phase == ArrayPhase.AFTER_ITEM:
            return frozenset(b",]"), False
        if phase == ArrayPhase.AFTER_COMMA:
            return merge_cands(frozenset(b" "), self.item.first()), False
        return self.item.first(), False

    def step(self, frame, b):
        _, phase, count = frame
        if phase == ArrayPhase.BEFORE_OPEN:
            if b == LBRACKET:
                yield STAY, (self, ArrayPhase.AFTER_OPEN, 0), ()
        elif phase == ArrayPhase.AFTER_OPEN:
            if b == RBRACKET:
                if self.min == 0:
                    yield DONE, ()
            elif self.max > 0:
                yield PUSH, (self, ArrayPhase.IN_ITEM, count), self.item
        elif phase == ArrayPhase.AFTER_ITEM:
            if b == COMMA and count < self.max:
                yield STAY, (self, ArrayPhase.AFTER_COMMA, count), ()
            elif b == RBRACKET and count >= self.min:
                yield DONE, ()
        elif phase == ArrayPhase.AFTER_COMMA and b == SPACE:
            yield STAY, (self, ArrayPhase.AFTER_COMMA_SPACE, count), ()
        elif phase in (ArrayPhase.AFTER_COMMA, ArrayPhase.AFTER_COMMA_SPACE):
            yield PUSH, (self, ArrayPhase.IN_ITEM, count), self.item

    def child_done(self, frame, result):
        return (self, ArrayPhase.AFTER_ITEM, frame[2] + 1), ()


class ObjectPhase(IntEnum):
    BEFORE_OPEN = 0         # before '{'
    AFTER_OPEN = 1          # after '{'
    IN_KEY = 2              # in a declared key
    BEFORE_COLON = 3
    AFTER_COLON = 4
    AFTER_COLON_SPACE = 5   # after ': '
    IN_VALUE = 6
    AFTER_VALUE = 7
    AFTER_COMMA = 8
    AFTER_COMMA_SPACE = 9   # after ', '
    IN_FREE_KEY = 10        # in an additionalProperties key


class ObjectNode(Node):
    """A JSON object whose declared keys may come in any order, each at most once.

    Frame: (node, phase, used, trie_node, key, free). ``phase`` is an ObjectPhase;
    ``used`` a bit set of declared keys; ``key`` the index of the key whose value is
    being read (-1: a free key); ``free`` the free (additionalProperties) keys
    present, at most DEFAULT_MAX_ITEMS of them, never repeated and never a declared
    key. With ``emit`` set (a call's arguments) the node reports key and value
    boundaries.
    """
    __slots__ = ("keys", "values", "required", "all", "extra", "trie", "emit", "free_key")
    EMPTY = frozenset()

    def __init__(self, props: dict[str, Node], required: list[str], extra: Node | None,
                 emit: bool = False, keep=None):
        self.keys = list(props)
        self.values = [props[k] for k in self.keys]
        self.required = sum(1 << self.keys.index(k) for k in set(required))
        self.all = (1 << len(self.keys)) - 1
        self.extra = extra
        self.emit = emit
        self.trie = key_trie(self.keys, keep)  # a key is matched without its opening quote
        self.free_key = FreeKeyNode(frozenset(self.keys)) if extra is not None else None

    def init(self):
        return [(self, ObjectPhase.BEFORE_OPEN, 0, 0, -1, self.EMPTY)]

    _CANDS = {ObjectPhase.BEFORE_OPEN: b"{", ObjectPhase.AFTER_OPEN: b'}"', ObjectPhase.BEFORE_COLON: b":",
              ObjectPhase.AFTER_VALUE: b",}", ObjectPhase.AFTER_COMMA: b' "',
              ObjectPhase.AFTER_COMMA_SPACE: b'"'}

    def cands(self, frame):
        _, phase, _, t, key, _ = frame
        if phase == ObjectPhase.IN_KEY:
            return self.trie.first[t], False
        if phase in (ObjectPhase.AFTER_COLON, ObjectPhase.AFTER_COLON_SPACE):
            node = self.values[key] if key >= 0 else self.extra
            return (merge_cands(frozenset(b" "), node.first()) if phase == ObjectPhase.AFTER_COLON
                    else node.first()), False
        return frozenset(self._CANDS.get(phase, b"")), False

    def _more(self, used, free) -> bool:
        return bool(self.all & ~used) or (self.extra is not None and len(free) < DEFAULT_MAX_ITEMS)

    def _open_key(self, used, free):
        """Actions for a quote that starts a key (after '{', ',' or ', ')."""
        if self.all & ~used:
            yield STAY, (self, ObjectPhase.IN_KEY, used, 0, -1, free), ()
        if self.extra is not None and len(free) < DEFAULT_MAX_ITEMS:
            yield PUSH, (self, ObjectPhase.IN_FREE_KEY, used, 0, -1, free), self.free_key, \
                (self.free_key.frame(free),)

    def step(self, frame, b):
        _, phase, used, t, key, free = frame
        if phase == ObjectPhase.BEFORE_OPEN:
            if b == LBRACE:
                yield STAY, (self, ObjectPhase.AFTER_OPEN, used, 0, -1, free), ()
        elif phase in (ObjectPhase.AFTER_OPEN, ObjectPhase.AFTER_VALUE):
            if b == RBRACE:
                if used & self.required == self.required:
                    yield DONE, ()
            elif phase == ObjectPhase.AFTER_OPEN and b == QUOTE:
                yield from self._open_key(used, free)
            elif phase == ObjectPhase.AFTER_VALUE and b == COMMA and self._more(used, free):
                yield STAY, (self, ObjectPhase.AFTER_COMMA, used, 0, -1, free), ()
        elif phase in (ObjectPhase.AFTER_COMMA, ObjectPhase.AFTER_COMMA_SPACE):
            if b == QUOTE:
                yield from self._open_key(used, free)
            elif b == SPACE and phase == ObjectPhase.AFTER_COMMA:
                yield STAY, (self, ObjectPhase.AFTER_COMMA_SPACE, used, 0, -1, free), ()
        elif phase == ObjectPhase.IN_KEY:
            trie = self.trie
            child = trie.children[t].get(b)
            if child is None or not trie.masks[child] & ~used:
                return
            k = trie.terminal[child]
            if k >= 0 and not (used >> k) & 1:
                yield STAY, (self, ObjectPhase.BEFORE_COLON, used | (1 << k), 0, k, free), \
                    ((("key", 1),) if self.emit else ())
            elif trie.children[child]:
                yield STAY, (self, ObjectPhase.IN_KEY, used, child, -1, free), ()
        elif phase == ObjectPhase.BEFORE_COLON:
            if b == COLON:
                yield STAY, (self, ObjectPhase.AFTER_COLON, used, 0, key, free), ()
        elif phase == ObjectPhase.AFTER_COLON and b == SPACE:
            yield STAY, (self, ObjectPhase.AFTER_COLON_SPACE, used, 0, key, free), ()
        elif phase in (ObjectPhase.AFTER_COLON, ObjectPhase.AFTER_COLON_SPACE):
            node = self.values[key] if key >= 0 else self.extra
            yield PUSH, (self, ObjectPhase.IN_VALUE, used, 0, key, free), node

    def child_done(self, frame, result):
        _, phase, used, _, key, free = frame
        if phase == ObjectPhase.IN_FREE_KEY:  # a free key ended
            return (self, ObjectPhase.BEFORE_COLON, used, 0, -1, free | {result}), \
                ((("key",),) if self.emit else ())
        return (self, ObjectPhase.AFTER_VALUE, used, 0, -1, free), ((("value",),) if self.emit else ())
