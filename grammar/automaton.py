"""Byte-level pushdown automaton for the call-list language.

A parser configuration is a *stack*: a tuple of frames, bottom first. A frame is a
tuple whose first item is the Node that owns it; the rest is that node's small,
hashable state. Frames hold no absolute positions, so equal configurations reached
by different beams are equal and share cached token masks.

``Node.step(frame, byte)`` yields actions:

- ``(STAY, frame, events)``   the byte is consumed, the node continues in ``frame``;
- ``(DONE, events)``          the byte is consumed and completes the value;
- ``(REFEED,)``               the value was already complete: pop and give the byte
                              to the parent (numbers end on the next byte);
- ``(PUSH, frame, child)``    become ``frame`` and push ``child``, which gets the byte.

``Node.child_done(frame)`` returns ``(frame, events)`` or None when the parent
rejects the finished child. Every node only accepts bytes after which the value
can still be completed within its bounds, so no reachable configuration is a dead
end (given a vocabulary that can spell every byte).

Events from ``step`` are ``(kind, delta)`` pairs (the boundary lies ``delta`` bytes
after the current byte's position); events from ``child_done`` are bare kinds placed
where the child ended. Kinds: ``name``, ``key``, ``value`` and ``end``; the position
is where the name, key, value or list ends (exclusive).
"""
from __future__ import annotations

import json
import math
from decimal import Decimal

STAY, DONE, REFEED, PUSH = range(4)
QUOTE, BSLASH, SPACE, COMMA, COLON = b'"\\ ,:'
LBRACE, RBRACE, LBRACKET, RBRACKET = b"{}[]"
ESCAPABLE = frozenset(b'"\\/bfnrt')
HEX = frozenset(b"0123456789abcdefABCDEF")
DIGITS = frozenset(b"0123456789")

DEFAULT_MAX_STRING = 256   # strings without maxLength stop here, so they cannot run away
DEFAULT_MAX_ITEMS = 64
MAX_INT_DIGITS = 15
MAX_FRAC_DIGITS = 15
ANY_DEPTH = 3              # nesting allowed inside a schema-less ("any") value


class Node:
    __slots__ = ()

    def init(self) -> list[tuple]:
        return [(self,)]

    def step(self, frame, b):  # pragma: no cover - interface
        raise NotImplementedError

    def child_done(self, frame):  # pragma: no cover - interface
        raise NotImplementedError


class Union(Node):
    """anyOf / oneOf / type lists: every alternative is tried (an NFA branch)."""
    __slots__ = ("alts",)

    def __init__(self, alts: list[Node]):
        self.alts = alts

    def init(self):
        return [f for a in self.alts for f in a.init()]


class StringNode(Node):
    """A free JSON string. Frame: (node, phase, count, esc).

    phase 0 expects the opening quote, 1 is inside. ``count`` is code points begun.
    ``esc``: 0 clean, 1 after a backslash, 11..14 hex digits left of a \\u escape,
    21..23 UTF-8 continuation bytes left, 40..43 a lead byte whose first continuation
    byte has a restricted range (no overlongs, no surrogates).
    """
    __slots__ = ("min", "max")

    def __init__(self, min_len: int = 0, max_len: int = DEFAULT_MAX_STRING):
        self.min, self.max = min_len, max_len

    def init(self):
        return [(self, 0, 0, 0)]

    def step(self, frame, b):
        _, phase, count, esc = frame
        if phase == 0:
            if b == QUOTE:
                yield STAY, (self, 1, 0, 0), ()
            return
        nxt = _string_byte(esc, b)
        if nxt is None:
            return
        if esc == 0:
            if b == QUOTE:
                if count >= self.min:
                    yield DONE, ()
                return
            if count >= self.max:
                return
            yield STAY, (self, 1, count + 1, nxt), ()
        else:
            yield STAY, (self, 1, count, nxt), ()


_RESTRICTED = {0xE0: (40, 0xA0, 0xBF, 21), 0xED: (41, 0x80, 0x9F, 21),
               0xF0: (42, 0x90, 0xBF, 22), 0xF4: (43, 0x80, 0x8F, 22)}
_RESTRICTED_BY_STATE = {v[0]: v[1:] for v in _RESTRICTED.values()}


def _string_byte(esc: int, b: int) -> int | None:
    """The escape/UTF-8 state after byte ``b`` inside a string, or None if invalid.
    In the clean state a quote returns 0 (the caller closes the string)."""
    if esc == 0:
        if b == BSLASH:
            return 1
        if b < 0x20:
            return None
        if b < 0x80:
            return 0
        if b in _RESTRICTED:
            return _RESTRICTED[b][0]
        if 0xC2 <= b <= 0xDF:
            return 21
        if 0xE1 <= b <= 0xEF:
            return 22
        if 0xF1 <= b <= 0xF3:
            return 23
        return None
    if esc == 1:
        if b in ESCAPABLE:
            return 0
        return 14 if b == 0x75 else None  # \u
    if 11 <= esc <= 14:
        return (0 if esc == 11 else esc - 1) if b in HEX else None
    if 21 <= esc <= 23:
        return (0 if esc == 21 else esc - 1) if 0x80 <= b <= 0xBF else None
    lo, hi, then = _RESTRICTED_BY_STATE[esc]
    return then if lo <= b <= hi else None


class Trie:
    """A byte trie over a set of strings. Node 0 is the root."""
    __slots__ = ("children", "terminal", "masks")

    def __init__(self, words: list[bytes]):
        self.children: list[dict[int, int]] = [{}]
        self.terminal: list[int] = [-1]   # index of the word ending here, or -1
        self.masks: list[int] = [0]       # bit i set: word i lies below this node
        for i, w in enumerate(words):
            t = 0
            self.masks[0] |= 1 << i
            for b in w:
                nxt = self.children[t].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[t][b] = nxt
                    self.children.append({})
                    self.terminal.append(-1)
                    self.masks.append(0)
                t = nxt
                self.masks[t] |= 1 << i
            self.terminal[t] = i


class LiteralNode(Node):
    """One of a fixed set of JSON values (enum, const, true/false, null), matched
    byte by byte on their compact JSON text. Frame: (node, trie_node)."""
    __slots__ = ("values", "trie")

    def __init__(self, values: list):
        self.values = values
        texts = [json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode() for v in values]
        self.trie = Trie(texts)

    def init(self):
        return [(self, 0)]

    def step(self, frame, b):
        t = frame[1]
        trie = self.trie
        child = trie.children[t].get(b)
        if child is not None:
            if trie.terminal[child] >= 0 and not trie.children[child]:
                yield DONE, ()
            else:
                yield STAY, (self, child), ()
        if trie.terminal[t] >= 0:
            yield REFEED,


class NumberNode(Node):
    """A JSON number or integer with bounded length; bounds are enforced on every
    prefix (a prefix is only accepted if some completion lies within them).
    Frame: (node, text)."""
    __slots__ = ("integer", "lo", "hi", "lo_open", "hi_open", "bounded")

    def __init__(self, integer: bool, schema: dict | None = None):
        s = schema or {}
        self.integer = integer
        self.lo, self.lo_open = _bound(s, "minimum", "exclusiveMinimum", -math.inf, max)
        self.hi, self.hi_open = _bound(s, "maximum", "exclusiveMaximum", math.inf, min)
        self.bounded = math.isfinite(self.lo) or math.isfinite(self.hi)

    def init(self):
        return [(self, b"")]

    def step(self, frame, b):
        text = frame[1]
        new = text + bytes((b,))
        if _number_prefix(new, not self.integer, not (self.integer or self.bounded)) \
                and self._feasible(new):
            yield STAY, (self, new), ()
        if text and _number_complete(text) and self._in_range(Decimal(text.decode())):
            yield REFEED,

    def _in_range(self, v: Decimal) -> bool:
        lo_ok = v > self.lo if self.lo_open else v >= self.lo
        hi_ok = v < self.hi if self.hi_open else v <= self.hi
        return lo_ok and hi_ok

    def _feasible(self, text: bytes) -> bool:
        """Can some completion of this prefix lie within the bounds?"""
        if not self.bounded:
            return True
        s = text.decode()
        neg = s.startswith("-")
        body = s[1:] if neg else s
        if not body:
            intervals = [(-math.inf, 0)] if neg else [(-math.inf, math.inf)]
            return any(self._meets(lo, hi) for lo, hi in intervals)
        if "." in body:
            ip, fp = body.split(".")
            v = Decimal(ip + "." + (fp or "0"))
            width = Decimal(1).scaleb(-len(fp)) if fp else Decimal(1)
            spans = [(v, v + width)]
        elif body == "0":
            spans = [(Decimal(0), Decimal(0) if self.integer else Decimal(1))]
        else:
            d = int(body)
            spans = []
            for k in range(0, MAX_INT_DIGITS - len(body) + 1):
                scale = 10 ** k
                top = (d + 1) * scale - (1 if self.integer else 0)
                spans.append((Decimal(d * scale), Decimal(top)))
        if neg:
            spans = [(-hi, -lo) for lo, hi in spans]
        return any(self._meets(lo, hi) for lo, hi in spans)

    def _meets(self, lo, hi) -> bool:
        # Closed-interval overlap test; open bounds are checked exactly on completion.
        return hi >= self.lo and lo <= self.hi


def _bound(s: dict, key: str, excl_key: str, default: float, pick) -> tuple:
    v, is_open = default, False
    if key in s:
        v = s[key]
    if excl_key in s and isinstance(s[excl_key], (int, float)) and not isinstance(s[excl_key], bool):
        e = s[excl_key]
        if v == default or pick(v, e) == e:
            v, is_open = e, True
    if math.isfinite(v):
        v = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    return v, is_open


def _number_prefix(text: bytes, frac: bool, exponent: bool) -> bool:
    """Is ``text`` a prefix of -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? within the length caps?"""
    i, n = 0, len(text)
    if i < n and text[i] == 0x2D:
        i += 1
    start = i
    while i < n and text[i] in DIGITS:
        i += 1
    ints = text[start:i]
    if len(ints) > 1 and ints[0] == 0x30 or len(ints) > MAX_INT_DIGITS:
        return False
    if i == n:
        return True
    if not ints:
        return False
    if text[i] == 0x2E:
        if not frac:
            return False
        i += 1
        fs = i
        while i < n and text[i] in DIGITS:
            i += 1
        if i - fs > MAX_FRAC_DIGITS:
            return False
        if i == n:
            return True
        if i == fs:
            return False
    if not exponent or text[i] not in b"eE":
        return False
    i += 1
    if i < n and text[i] in b"+-":
        i += 1
    es = i
    while i < n and text[i] in DIGITS:
        i += 1
    return i == n and i - es <= 2


def _number_complete(text: bytes) -> bool:
    return text[-1] in DIGITS


class ArrayNode(Node):
    """Frame: (node, phase, count). Phases: 0 before '[', 1 after '[', 2 in an item,
    3 after an item, 4 after ',', 5 after ', '."""
    __slots__ = ("item", "min", "max")

    def __init__(self, item: Node, min_items: int = 0, max_items: int = DEFAULT_MAX_ITEMS):
        self.item, self.min, self.max = item, min_items, max_items

    def init(self):
        return [(self, 0, 0)]

    def step(self, frame, b):
        _, phase, count = frame
        if phase == 0:
            if b == LBRACKET:
                yield STAY, (self, 1, 0), ()
        elif phase == 1:
            if b == RBRACKET:
                if self.min == 0:
                    yield DONE, ()
            elif self.max > 0:
                yield PUSH, (self, 2, count), self.item
        elif phase == 3:
            if b == COMMA and count < self.max:
                yield STAY, (self, 4, count), ()
            elif b == RBRACKET and count >= self.min:
                yield DONE, ()
        elif phase == 4 and b == SPACE:
            yield STAY, (self, 5, count), ()
        elif phase in (4, 5):
            yield PUSH, (self, 2, count), self.item

    def child_done(self, frame):
        return (self, 3, frame[2] + 1), ()


class ObjectNode(Node):
    """A JSON object whose declared keys may come in any order, each at most once.

    Frame: (node, phase, used, trie_node, key). ``used`` is a bit set of declared
    keys; ``key`` the index of the key whose value is being read (-1: a free key).
    Phases: 0 before '{', 1 after '{', 2 in a declared key, 3 before ':', 4 after ':',
    5 after ': ', 6 in a value, 7 after a value, 8 after ',', 9 after ', ',
    10 in a free key (additionalProperties). With ``emit`` set (a call's arguments)
    the node reports key and value boundaries.
    """
    __slots__ = ("keys", "values", "required", "all", "extra", "trie", "emit", "free_key")

    def __init__(self, props: dict[str, Node], required: list[str], extra: Node | None,
                 emit: bool = False):
        self.keys = list(props)
        self.values = [props[k] for k in self.keys]
        self.required = sum(1 << self.keys.index(k) for k in required)
        self.all = (1 << len(self.keys)) - 1
        self.extra = extra
        self.emit = emit
        # A key is matched on its JSON text without the opening quote.
        self.trie = Trie([json.dumps(k, ensure_ascii=False)[1:].encode() for k in self.keys])
        self.free_key = StringNode() if extra is not None else None

    def init(self):
        return [(self, 0, 0, 0, -1)]

    def _open_key(self, used, b):
        """Actions for a quote that starts a key (phases 1, 8, 9)."""
        if self.all & ~used:
            yield STAY, (self, 2, used, 0, -1), ()
        if self.extra is not None:
            yield PUSH, (self, 10, used, 0, -1), self.free_key

    def step(self, frame, b):
        _, phase, used, t, key = frame
        if phase == 0:
            if b == LBRACE:
                yield STAY, (self, 1, used, 0, -1), ()
        elif phase in (1, 7):
            if b == RBRACE:
                if used & self.required == self.required:
                    yield DONE, ()
            elif phase == 1 and b == QUOTE:
                yield from self._open_key(used, b)
            elif phase == 7 and b == COMMA and (self.all & ~used or self.extra is not None):
                yield STAY, (self, 8, used, 0, -1), ()
        elif phase in (8, 9):
            if b == QUOTE:
                yield from self._open_key(used, b)
            elif b == SPACE and phase == 8:
                yield STAY, (self, 9, used, 0, -1), ()
        elif phase == 2:
            trie = self.trie
            child = trie.children[t].get(b)
            if child is None or not trie.masks[child] & ~used:
                return
            k = trie.terminal[child]
            if k >= 0 and not (used >> k) & 1:
                yield STAY, (self, 3, used | (1 << k), 0, k), ((("key", 1),) if self.emit else ())
            elif trie.children[child]:
                yield STAY, (self, 2, used, child, -1), ()
        elif phase == 3:
            if b == COLON:
                yield STAY, (self, 4, used, 0, key), ()
        elif phase == 4 and b == SPACE:
            yield STAY, (self, 5, used, 0, key), ()
        elif phase in (4, 5):
            node = self.values[key] if key >= 0 else self.extra
            yield PUSH, (self, 6, used, 0, key), node

    def child_done(self, frame):
        _, phase, used, _, key = frame
        if phase == 10:  # a free key ended
            return (self, 3, used, 0, -1), ((("key",),) if self.emit else ())
        return (self, 7, used, 0, -1), ((("value",),) if self.emit else ())


class CallNode(Node):
    """One call: {"name": <tool name>, "arguments": <that tool's arguments>}.

    Frame: (node, phase, i, tool). Phases: 0 matching '{"name":' (i bytes done),
    1 after it, 2 after a space, 3 in the name (i = trie node), 4 before ',',
    5 after ',', 6 matching '"arguments":', 7 after it, 8 after a space,
    9 in the arguments, 10 before '}'."""
    __slots__ = ("names", "args", "trie")
    HEAD = b'{"name":'
    ARGS = b'"arguments":'

    def __init__(self, names: list[str], args: list[Node]):
        self.names, self.args = names, args
        self.trie = Trie([json.dumps(n, ensure_ascii=False)[1:].encode() for n in names])

    def init(self):
        return [(self, 0, 0, -1)]

    def step(self, frame, b):
        _, phase, i, tool = frame
        if phase == 0 or phase == 6:
            lit = self.HEAD if phase == 0 else self.ARGS
            if b == lit[i]:
                yield STAY, ((self, phase + 1, 0, tool) if i + 1 == len(lit) else (self, phase, i + 1, tool)), ()
        elif phase in (1, 2):
            if b == QUOTE:
                yield STAY, (self, 3, 0, -1), ()
            elif b == SPACE and phase == 1:
                yield STAY, (self, 2, 0, -1), ()
        elif phase == 3:
            child = self.trie.children[i].get(b)
            if child is None:
                return
            k = self.trie.terminal[child]
            if k >= 0:
                yield STAY, (self, 4, 0, k), (("name", 1),)
            else:
                yield STAY, (self, 3, child, -1), ()
        elif phase == 4:
            if b == COMMA:
                yield STAY, (self, 5, 0, tool), ()
        elif phase == 5:
            if b == SPACE:
                yield STAY, (self, 6, 0, tool), ()
            elif b == QUOTE:
                yield STAY, (self, 6, 1, tool), ()
        elif phase == 7 and b == SPACE:
            yield STAY, (self, 8, 0, tool), ()
        elif phase in (7, 8):
            yield PUSH, (self, 9, 0, tool), self.args[tool]
        elif phase == 10 and b == RBRACE:
            yield DONE, ()

    def child_done(self, frame):
        return (self, 10, 0, frame[3]), ()


class CallListNode(Node):
    """The whole output: [call, call, ...]. Frame: (node, phase, count).
    Phases: 0 before '[', 1 after '[', 2 in a call, 3 after a call, 4 after ',',
    5 after ', ', 6 closed (final)."""
    __slots__ = ("call", "min", "max")

    def __init__(self, call: CallNode, min_calls: int, max_calls: int):
        self.call, self.min, self.max = call, min_calls, max_calls

    def init(self):
        return [(self, 0, 0)]

    def step(self, frame, b):
        _, phase, count = frame
        if phase == 0:
            if b == LBRACKET:
                yield STAY, (self, 1, 0), ()
        elif phase == 1:
            if b == RBRACKET and self.min == 0:
                yield STAY, (self, 6, 0), (("end", 1),)
            elif b == LBRACE and self.max > 0:
                yield PUSH, (self, 2, count), self.call
        elif phase == 3:
            if b == COMMA and count < self.max:
                yield STAY, (self, 4, count), ()
            elif b == RBRACKET and count >= self.min:
                yield STAY, (self, 6, count), (("end", 1),)
        elif phase == 4 and b == SPACE:
            yield STAY, (self, 5, count), ()
        elif phase in (4, 5) and b == LBRACE:
            yield PUSH, (self, 2, count), self.call

    def child_done(self, frame):
        return (self, 3, frame[2] + 1), ()

    @staticmethod
    def is_final(stack: tuple) -> bool:
        return len(stack) == 1 and stack[0][1] == 6


def feed(stack: tuple, b: int, pos: int, out: list, events: tuple = ()) -> None:
    """Append to ``out`` every (stack, events) reachable by consuming byte ``b``
    at byte position ``pos``. Event positions are absolute."""
    top = stack[-1]
    node = top[0]
    for act in node.step(top, b):
        kind = act[0]
        if kind == STAY:
            out.append((stack[:-1] + (act[1],), events + _place(act[2], pos)))
        elif kind == DONE:
            _pop(stack[:-1], b, pos, out, events, consumed=True)
        elif kind == REFEED:
            _pop(stack[:-1], b, pos, out, events, consumed=False)
        else:  # PUSH
            base = stack[:-1] + (act[1],)
            for child in act[2].init():
                feed(base + (child,), b, pos, out, events)


def _pop(stack, b, pos, out, events, consumed):
    parent = stack[-1]
    res = parent[0].child_done(parent)
    if res is None:
        return
    frame, ev = res
    stack = stack[:-1] + (frame,)
    end = pos + 1 if consumed else pos
    events = events + tuple((k, end) for (k,) in ev)
    if consumed:
        out.append((stack, events))
    else:
        feed(stack, b, pos, out, events)


def _place(ev, pos):
    return tuple((k, pos + d) for k, d in ev) if ev else ()


def advance_stacks(stacks: tuple, data: bytes, pos: int) -> tuple[tuple, tuple]:
    """Feed ``data`` to every alternative; return the surviving stacks (deduplicated)
    and the events of the survivors (each alternative keeps its own)."""
    cur = [(s, ()) for s in stacks]
    for i, b in enumerate(data):
        nxt: list = []
        for s, ev in cur:
            feed(s, b, pos + i, nxt, ev)
        if not nxt:
            return (), ()
        seen: dict = {}
        for s, ev in nxt:
            seen.setdefault(s, ev)
        cur = list(seen.items())
    stacks_out = tuple(s for s, _ in cur)
    return stacks_out, cur[0][1] if cur else ()
