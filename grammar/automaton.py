"""Byte-level pushdown automaton for the call-list language.

A parser configuration is a *stack*: a tuple of frames, bottom first. A frame is a
tuple whose first item is the Node that owns it; the rest is that node's small,
hashable state. Frames hold no absolute positions, so equal configurations reached
by different beams are equal and share cached token masks.

``Node.step(frame, byte)`` yields actions:

- ``(STAY, frame, events)``   the byte is consumed, the node continues in ``frame``;
- ``(DONE, events)``          the byte is consumed and completes the value
                              (``(DONE, events, result)`` hands ``result`` to the parent);
- ``(REFEED,)``               the value was already complete: pop and give the byte
                              to the parent (numbers end on the next byte);
- ``(PUSH, frame, child)``    become ``frame`` and push ``child``, which gets the byte
                              (``(PUSH, frame, child, frames)`` starts the child in
                              the given frames instead of ``child.init()``).

``Node.cands(frame)`` returns ``(bytes, passes)``: a superset of the bytes the frame
itself may consume (None: any byte) and whether it may be complete already and pass
the next byte to its parent. The token index uses it only to skip bytes that
cannot be accepted; acceptance itself is always decided by ``step``.

``Node.child_done(frame, result)`` returns ``(frame, events)`` or None when the parent
rejects the finished child. Every node only accepts bytes after which the value
can still be completed within its bounds, so no reachable configuration is a dead
end (given a vocabulary that can spell every byte).

Completion is detected at the same byte whatever the alternative: strings, arrays,
objects, ``true``/``false``/``null`` on their last byte, numbers (free or enum
values) on the byte after. So the events of an NFA branch depend only on the text.

Events from ``step`` are ``(kind, delta)`` pairs (the boundary lies ``delta`` bytes
after the current byte's position); events from ``child_done`` are bare kinds placed
where the child ended. Kinds: ``name``, ``key``, ``value`` and ``end``; the position
is where the name, key, value or list ends (exclusive).
"""
from __future__ import annotations

import json
import math
import struct
from decimal import Context, Decimal

STAY, DONE, REFEED, PUSH = range(4)
QUOTE, BSLASH, SPACE, COMMA, COLON = b'"\\ ,:'
LBRACE, RBRACE, LBRACKET, RBRACKET = b"{}[]"
ESCAPABLE = frozenset(b'"\\/bfnrt')
HEX = frozenset(b"0123456789abcdefABCDEF")
DIGITS = frozenset(b"0123456789")

DEFAULT_MAX_STRING = 256   # strings without maxLength stop here, so they cannot run away
DEFAULT_MAX_KEY = 128      # free (additionalProperties) keys
DEFAULT_MAX_ITEMS = 64     # arrays without maxItems; free keys per object
# Numbers: every float repr without an exponent fits (it uses one from 1e16 and
# below 1e-4); an exponent (unbounded numbers only) has at most 2 digits, so no
# number overflows to infinity.
MAX_INT_DIGITS = 16
MAX_FRAC_DIGITS = 20
MAX_EXP_DIGITS = 2
ANY_DEPTH = 3              # nesting allowed inside a schema-less ("any") value


ALL = None  # cands(): any byte


def _union(a, b):
    return None if a is None or b is None else a | b


class Node:
    __slots__ = ("_first",)

    def init(self) -> list[tuple]:
        return [(self,)]

    def step(self, frame, b):  # pragma: no cover - interface
        raise NotImplementedError

    def cands(self, frame) -> tuple[frozenset | None, bool]:
        return ALL, True

    def first(self) -> frozenset | None:
        """The bytes a value of this node may start with (a superset)."""
        try:
            return self._first
        except AttributeError:
            out: frozenset | None = frozenset()
            for f in self.init():
                out = _union(out, f[0].cands(f)[0])
            self._first = out
            return out

    def child_done(self, frame, result):  # pragma: no cover - interface
        raise NotImplementedError


class Union(Node):
    """anyOf / oneOf / type lists: every alternative is tried (an NFA branch)."""
    __slots__ = ("alts",)

    def __init__(self, alts: list[Node]):
        self.alts = alts

    def init(self):
        return [f for a in self.alts for f in a.init()]


# ----------------------------------------------------------------------------- strings
# Escape / UTF-8 states inside a string, and their byte transitions (a table).
(S_CLEAN, S_ESC, S_U1, S_U2, S_U3, S_U4, S_UD, S_HI3, S_HI4, S_LO_BS, S_LO_U, S_LO_D,
 S_LO2, S_LO3, S_LO4, S_C1, S_C2, S_C3, S_E0, S_ED, S_F0, S_F4) = range(22)
N_STRING_STATES = 22


def _string_table() -> list[list[int]]:
    """T[state][byte] -> next state, -1 if invalid. A \\u escape is one code point;
    a surrogate pair (\\uD83D\\uDE00) is one code point too, and lone surrogates are
    rejected (Python would decode them into strings that cannot be encoded)."""
    t = [[-1] * 256 for _ in range(N_STRING_STATES)]
    hexd = sorted(HEX)
    for b in range(0x20, 0x80):
        t[S_CLEAN][b] = S_CLEAN
    t[S_CLEAN][BSLASH] = S_ESC
    for b in range(0xC2, 0xE0):
        t[S_CLEAN][b] = S_C1
    for b in range(0xE1, 0xF0):
        t[S_CLEAN][b] = S_C2
    for b in range(0xF1, 0xF4):
        t[S_CLEAN][b] = S_C3
    t[S_CLEAN][0xE0], t[S_CLEAN][0xED], t[S_CLEAN][0xF0], t[S_CLEAN][0xF4] = S_E0, S_ED, S_F0, S_F4
    for b in ESCAPABLE:
        t[S_ESC][b] = S_CLEAN
    t[S_ESC][ord("u")] = S_U1
    for b in hexd:
        t[S_U1][b] = S_U2
        t[S_U2][b] = S_U3
        t[S_U3][b] = S_U4
        t[S_U4][b] = S_CLEAN
        t[S_HI3][b] = S_HI4
        t[S_HI4][b] = S_LO_BS
        t[S_LO3][b] = S_LO4
        t[S_LO4][b] = S_CLEAN
    for b in b"dD":
        t[S_U1][b] = S_UD
        t[S_LO_D][b] = S_LO2
    for b in b"01234567":
        t[S_UD][b] = S_U3
    for b in b"89abAB":
        t[S_UD][b] = S_HI3
    for b in b"cdefCDEF":
        t[S_LO2][b] = S_LO3
    t[S_LO_BS][BSLASH] = S_LO_U
    t[S_LO_U][ord("u")] = S_LO_D
    for b in range(0x80, 0xC0):
        t[S_C1][b] = S_CLEAN
        t[S_C2][b] = S_C1
        t[S_C3][b] = S_C2
    for state, lo, hi, then in ((S_E0, 0xA0, 0xBF, S_C1), (S_ED, 0x80, 0x9F, S_C1),
                                (S_F0, 0x90, 0xBF, S_C2), (S_F4, 0x80, 0x8F, S_C2)):
        for b in range(lo, hi + 1):
            t[state][b] = then
    return t


STRING_TABLE = _string_table()


def _set(bs: bytes) -> frozenset:
    return frozenset(bs)


_QUOTE_SET = frozenset(b'"')
_NUMBER_BYTES = frozenset(b"0123456789.eE")
_NUMBER_START = frozenset(b"0123456789-")
_EXP_SIGN = frozenset(b"0123456789+-")
_DIGITS_DOT = frozenset(b"0123456789.")
_DIGITS_E = frozenset(b"0123456789eE")


def _string_byte(esc: int, b: int) -> int | None:
    """The escape/UTF-8 state after byte ``b`` inside a string, or None if invalid.
    In the clean state a quote returns 0 (the caller closes the string)."""
    nxt = STRING_TABLE[esc][b]
    return None if nxt < 0 else nxt


class StringNode(Node):
    """A free JSON string. Frame: (node, phase, count, esc).

    phase 0 expects the opening quote, 1 is inside. ``count`` is code points begun
    (as Python counts them, which is what minLength/maxLength mean). ``esc`` is the
    escape / UTF-8 state (S_* above); S_CLEAN is 0.
    """
    __slots__ = ("min", "max")

    def __init__(self, min_len: int = 0, max_len: int = DEFAULT_MAX_STRING):
        self.min, self.max = min_len, max_len

    def init(self):
        return [(self, 0, 0, 0)]

    def cands(self, frame):
        return (_QUOTE_SET if frame[1] == 0 else ALL), False

    def step(self, frame, b):
        _, phase, count, esc = frame
        if phase == 0:
            if b == QUOTE:
                yield STAY, (self, 1, 0, 0), ()
            return
        if esc == 0:
            if b == QUOTE:
                if count >= self.min:
                    yield DONE, ()
                return
            nxt = STRING_TABLE[0][b]
            if nxt < 0 or count >= self.max:
                return
            yield STAY, (self, 1, count + 1, nxt), ()
        else:
            nxt = STRING_TABLE[esc][b]
            if nxt >= 0:
                yield STAY, (self, 1, count, nxt), ()


class FreeKeyNode(StringNode):
    """A key of additionalProperties: a string that is neither a declared key nor a
    key already used in this object. Frame: (node, phase, count, esc, text, used)
    with ``text`` the raw bytes so far and ``used`` the free keys already present.
    The finished key goes to the parent as the DONE result."""
    __slots__ = ("declared",)

    def __init__(self, declared: frozenset, max_len: int = DEFAULT_MAX_KEY):
        super().__init__(0, max_len)
        self.declared = declared

    def init(self):  # pragma: no cover - pushed with explicit frames
        return [(self, 0, 0, 0, b"", frozenset())]

    def frame(self, used: frozenset) -> tuple:
        return (self, 0, 0, 0, b"", used)

    def taken(self, text: bytes, used: frozenset) -> str | None:
        """The key if ``text`` (complete string content) may be used, else None."""
        key = json.loads(b'"' + text + b'"')
        return None if key in self.declared or key in used else key

    def step(self, frame, b):
        _, phase, count, esc, text, used = frame
        if phase == 0:
            if b == QUOTE:
                yield STAY, (self, 1, 0, 0, b"", used), ()
            return
        if esc == 0 and b == QUOTE:
            key = self.taken(text, used)
            if key is not None:
                yield DONE, (), key
            return
        nxt = STRING_TABLE[esc][b]
        if nxt < 0:
            return
        if esc == 0:
            if count >= self.max:
                return
            count += 1
        text += bytes((b,))
        # At the length cap the key must close next: only go there if it may.
        if nxt == 0 and count == self.max and self.taken(text, used) is None:
            return
        yield STAY, (self, 1, count, nxt, text, used), ()


class Trie:
    """A byte trie over a set of words; ``ids[i]`` is the item word ``i`` spells
    (several spellings may share an item). Node 0 is the root."""
    __slots__ = ("children", "terminal", "masks", "first")

    def __init__(self, words: list[bytes], ids: list[int] | None = None, masks: bool = True):
        ids = list(range(len(words))) if ids is None else ids
        self.children: list[dict[int, int]] = [{}]
        self.terminal: list[int] = [-1]   # item of the word ending here, or -1
        self.masks: list[int] = [0]       # bit i set: a word of item i lies below this node
        for w, i in zip(words, ids):
            t = 0
            bit = 1 << i if masks else 0
            self.masks[0] |= bit
            for b in w:
                nxt = self.children[t].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[t][b] = nxt
                    self.children.append({})
                    self.terminal.append(-1)
                    self.masks.append(0)
                t = nxt
                if masks:
                    self.masks[t] |= bit
            if self.terminal[t] < 0:
                self.terminal[t] = i
        self.first = [frozenset(c) for c in self.children]  # bytes that go on from a node


def spellings(value, container_spacing: bool = True, keep=None) -> list[bytes]:
    """The JSON texts accepted for a fixed value: compact and json.dumps' default
    separators, with and without ASCII escaping of non-ASCII characters. ``keep``
    (bytes -> bool) drops the unescaped spellings a vocabulary cannot write; the
    escaped ones are ASCII, which every vocabulary can."""
    out = []
    for ascii_ in (False, True):
        seps = [(",", ":"), (", ", ": ")] if container_spacing else [(",", ":")]
        for sep in seps:
            text = json.dumps(value, ensure_ascii=ascii_, separators=sep).encode()
            if ascii_ or text.isascii() or keep is None or keep(text):
                out.append(text)
    return list(dict.fromkeys(out))


class LiteralNode(Node):
    """One of a fixed set of JSON values (enum, const, true/false, null), matched
    byte by byte on their JSON texts (see ``spellings``). Frame: (node, trie_node)."""
    __slots__ = ("values", "trie")

    def __init__(self, values: list, keep=None):
        self.values = values
        words, ids = [], []
        for i, v in enumerate(values):
            for w in spellings(v, isinstance(v, (list, dict)), keep):
                words.append(w)
                ids.append(i)
        self.trie = Trie(words, ids, masks=False)

    def init(self):
        return [(self, 0)]

    def cands(self, frame):
        t = frame[1]
        return self.trie.first[t], self.trie.terminal[t] >= 0

    def step(self, frame, b):
        t = frame[1]
        trie = self.trie
        child = trie.children[t].get(b)
        if child is not None:
            # A number ends on the next byte, like a free number (see the module doc).
            if trie.terminal[child] >= 0 and not trie.children[child] and b not in DIGITS:
                yield DONE, ()
            else:
                yield STAY, (self, child), ()
        if trie.terminal[t] >= 0:
            yield REFEED,


# ----------------------------------------------------------------------------- numbers
_CTX = Context(prec=80)
_WIDE = Context(prec=1200)  # exact midpoints between neighbouring doubles
_GRID = Decimal(1).scaleb(-MAX_FRAC_DIGITS)
_BIG = Decimal(10) ** (MAX_INT_DIGITS + 1)  # bounds beyond any writable number


class NumberNode(Node):
    """A JSON number or integer with bounded length; bounds are enforced on every
    prefix (a prefix is only accepted if some completion lies within them), exactly
    as Python reads the number: json.loads gives an int for a text without '.' and
    a (rounded) float otherwise, compared with the bound as is. Bounded numbers
    take no exponent. Frame: (node, text)."""
    __slots__ = ("integer", "lo", "hi", "lo_open", "hi_open", "bounded", "_int", "_float", "_memo")

    def __init__(self, integer: bool, schema: dict | None = None):
        s = schema or {}
        self.integer = integer
        self.lo, self.lo_open = _bound(s, "minimum", "exclusiveMinimum", -math.inf, max)
        self.hi, self.hi_open = _bound(s, "maximum", "exclusiveMaximum", math.inf, min)
        self.bounded = math.isfinite(self.lo) or math.isfinite(self.hi)
        # The same bounds on the decimal value of a text: as is for int texts, and
        # moved to where float rounding crosses them for texts with a fraction.
        self._int = (_exact(self.lo), self.lo_open, _exact(self.hi), self.hi_open)
        self._float = _float_bounds(self.lo, self.lo_open, self.hi, self.hi_open)
        self._memo: dict[bytes, bool] = {}

    def init(self):
        return [(self, b"")]

    def cands(self, frame):
        text = frame[1]
        if not text:
            return _NUMBER_START, False
        last = text[-1]
        if last not in DIGITS:  # after '-', '.', 'e' or a sign of the exponent
            return (_EXP_SIGN if last in b"eE" else DIGITS), False
        if self.integer or 0x65 in text or 0x45 in text:
            return DIGITS, True
        if self.bounded:
            return (DIGITS if 0x2E in text else _DIGITS_DOT), True
        return (_DIGITS_E if 0x2E in text else _NUMBER_BYTES), True

    def satisfiable(self) -> bool:
        """Does any number of this node's form lie within its bounds?"""
        return self._feasible(b"")

    def step(self, frame, b):
        text = frame[1]
        new = text + bytes((b,))
        ok = self._memo.get(new)
        if ok is None:
            ok = _number_prefix(new, not self.integer, not (self.integer or self.bounded)) \
                and self._feasible(new)
            if len(self._memo) < 100_000:
                self._memo[new] = ok
        if ok:
            yield STAY, (self, new), ()
        if text and text[-1] in DIGITS and self._in_range(text):
            yield REFEED,

    def _in_range(self, text: bytes) -> bool:
        if not self.bounded:
            return True
        v = float(text) if 0x2E in text else int(text)  # what json.loads gives
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
        g = _GRID
        one = Decimal(1)
        top = Decimal(10) ** MAX_INT_DIGITS
        ints, floats = [], []  # spans of completions read as int / as float
        if not body:  # any magnitude
            ints.append((Decimal(0), top - 1))
            floats.append((Decimal(0), _CTX.subtract(top, g)))
        elif "." in body:
            ip, fp = body.split(".")
            v = Decimal(ip + "." + (fp or "0"))
            width = Decimal(1).scaleb(-len(fp))
            floats.append((v, _CTX.subtract(_CTX.add(v, width), g) if len(fp) < MAX_FRAC_DIGITS else v))
        elif body == "0":
            ints.append((Decimal(0), Decimal(0)))
            floats.append((Decimal(0), _CTX.subtract(one, g)))
        else:
            d = Decimal(int(body))
            for k in range(0, MAX_INT_DIGITS - len(body) + 1):
                scale = Decimal(10) ** k
                lo = _CTX.multiply(d, scale)
                ints.append((lo, _CTX.multiply(d + 1, scale) - 1))
                floats.append((lo, _CTX.subtract(_CTX.multiply(d + 1, scale), g)))
        if self.integer:
            floats = []
        if neg or not s:  # negative completions (of "" too: a '-' may come)
            neg_ints = [(-b, -a) for a, b in ints]
            neg_floats = [(-b, -a) for a, b in floats]
            ints, floats = (neg_ints, neg_floats) if neg else (ints + neg_ints, floats + neg_floats)
        return any(_meets(a, b, one, *self._int) for a, b in ints) or \
            any(_meets(a, b, g, *self._float) for a, b in floats)


def _meets(a: Decimal, b: Decimal, step: Decimal, lo, lo_open, hi, hi_open) -> bool:
    """Is some multiple of ``step`` in [a, b] (a, b multiples of it) within the
    bounds (Decimal, or None for none)?"""
    x = a
    if lo is not None:
        if lo > _BIG:
            return False
        if lo >= -_BIG:
            c = _CTX.multiply(_CTX.divide_int(lo, step), step)  # towards zero
            while c < lo or (lo_open and c == lo):
                c = _CTX.add(c, step)
            x = max(a, c)
    if x > b:
        return False
    if hi is None or hi > _BIG:
        return True
    if hi < -_BIG:
        return False
    return x < hi if hi_open else x <= hi


def _bound(s: dict, key: str, excl_key: str, default: float, pick) -> tuple:
    """(bound, open) from the inclusive and exclusive keywords: the stricter one."""
    v, is_open = default, False
    if key in s:
        v = s[key]
    if excl_key in s and isinstance(s[excl_key], (int, float)) and not isinstance(s[excl_key], bool):
        e = s[excl_key]
        if v == default or pick(v, e) == e:
            v, is_open = e, True
    return v, is_open


def _exact(v) -> Decimal | None:
    return Decimal(v) if math.isfinite(v) else None  # a float's exact binary value


def _even(d: float) -> bool:
    return struct.unpack("<q", struct.pack("<d", d))[0] & 1 == 0


def _float_bounds(lo, lo_open, hi, hi_open) -> tuple:
    """Bounds on a decimal x equivalent to ``lo <(=) float(x) <(=) hi`` (float()
    rounds to nearest, ties to even)."""
    out_lo = out_hi = None
    lo_o = hi_o = False
    if math.isfinite(lo) and abs(lo) < 1e300:
        d = float(lo)  # the least double within the bound
        if d < lo or (lo_open and d == lo):
            d = math.nextafter(d, math.inf)
        below = math.nextafter(d, -math.inf)
        out_lo = _WIDE.divide(_WIDE.add(Decimal(below), Decimal(d)), 2)
        lo_o = not _even(d)  # at the midpoint x rounds to the even one
    elif math.isfinite(lo):
        out_lo = Decimal(lo)
    if math.isfinite(hi) and abs(hi) < 1e300:
        d = float(hi)  # the greatest double within the bound
        if d > hi or (hi_open and d == hi):
            d = math.nextafter(d, -math.inf)
        above = math.nextafter(d, math.inf)
        out_hi = _WIDE.divide(_WIDE.add(Decimal(d), Decimal(above)), 2)
        hi_o = not _even(d)
    elif math.isfinite(hi):
        out_hi = Decimal(hi)
    return out_lo, lo_o, out_hi, hi_o


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
    return i == n and i - es <= MAX_EXP_DIGITS


# ----------------------------------------------------------------------------- containers
class ArrayNode(Node):
    """Frame: (node, phase, count). Phases: 0 before '[', 1 after '[', 2 in an item,
    3 after an item, 4 after ',', 5 after ', '."""
    __slots__ = ("item", "min", "max")

    def __init__(self, item: Node, min_items: int = 0, max_items: int = DEFAULT_MAX_ITEMS):
        self.item, self.min, self.max = item, min_items, max_items

    def init(self):
        return [(self, 0, 0)]

    def cands(self, frame):
        phase = frame[1]
        if phase == 0:
            return _set(b"["), False
        if phase == 1:
            return _union(_set(b"]"), self.item.first()), False
        if phase == 3:
            return _set(b",]"), False
        if phase == 4:
            return _union(_set(b" "), self.item.first()), False
        return self.item.first(), False

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

    def child_done(self, frame, result):
        return (self, 3, frame[2] + 1), ()


def key_spellings(key: str, keep=None) -> list[bytes]:
    """A key's (or tool name's) JSON texts without the opening quote (see spellings)."""
    return [w[1:] for w in spellings(key, False, keep)]


class ObjectNode(Node):
    """A JSON object whose declared keys may come in any order, each at most once.

    Frame: (node, phase, used, trie_node, key, free). ``used`` is a bit set of
    declared keys; ``key`` the index of the key whose value is being read (-1: a
    free key); ``free`` the free (additionalProperties) keys present, at most
    DEFAULT_MAX_ITEMS of them, never repeated and never a declared key.
    Phases: 0 before '{', 1 after '{', 2 in a declared key, 3 before ':', 4 after ':',
    5 after ': ', 6 in a value, 7 after a value, 8 after ',', 9 after ', ',
    10 in a free key. With ``emit`` set (a call's arguments) the node reports key
    and value boundaries.
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
        # A key is matched on its JSON text without the opening quote.
        words, ids = [], []
        for i, k in enumerate(self.keys):
            for w in key_spellings(k, keep):
                words.append(w)
                ids.append(i)
        self.trie = Trie(words, ids)
        self.free_key = FreeKeyNode(frozenset(self.keys)) if extra is not None else None

    def init(self):
        return [(self, 0, 0, 0, -1, self.EMPTY)]

    _CANDS = {0: b"{", 1: b'}"', 3: b":", 7: b",}", 8: b' "', 9: b'"'}

    def cands(self, frame):
        _, phase, _, t, key, _ = frame
        if phase == 2:
            return self.trie.first[t], False
        if phase in (4, 5):
            node = self.values[key] if key >= 0 else self.extra
            return (_union(_set(b" "), node.first()) if phase == 4 else node.first()), False
        return _set(self._CANDS.get(phase, b"")), False

    def _more(self, used, free) -> bool:
        return bool(self.all & ~used) or (self.extra is not None and len(free) < DEFAULT_MAX_ITEMS)

    def _open_key(self, used, free):
        """Actions for a quote that starts a key (phases 1, 8, 9)."""
        if self.all & ~used:
            yield STAY, (self, 2, used, 0, -1, free), ()
        if self.extra is not None and len(free) < DEFAULT_MAX_ITEMS:
            yield PUSH, (self, 10, used, 0, -1, free), self.free_key, (self.free_key.frame(free),)

    def step(self, frame, b):
        _, phase, used, t, key, free = frame
        if phase == 0:
            if b == LBRACE:
                yield STAY, (self, 1, used, 0, -1, free), ()
        elif phase in (1, 7):
            if b == RBRACE:
                if used & self.required == self.required:
                    yield DONE, ()
            elif phase == 1 and b == QUOTE:
                yield from self._open_key(used, free)
            elif phase == 7 and b == COMMA and self._more(used, free):
                yield STAY, (self, 8, used, 0, -1, free), ()
        elif phase in (8, 9):
            if b == QUOTE:
                yield from self._open_key(used, free)
            elif b == SPACE and phase == 8:
                yield STAY, (self, 9, used, 0, -1, free), ()
        elif phase == 2:
            trie = self.trie
            child = trie.children[t].get(b)
            if child is None or not trie.masks[child] & ~used:
                return
            k = trie.terminal[child]
            if k >= 0 and not (used >> k) & 1:
                yield STAY, (self, 3, used | (1 << k), 0, k, free), ((("key", 1),) if self.emit else ())
            elif trie.children[child]:
                yield STAY, (self, 2, used, child, -1, free), ()
        elif phase == 3:
            if b == COLON:
                yield STAY, (self, 4, used, 0, key, free), ()
        elif phase == 4 and b == SPACE:
            yield STAY, (self, 5, used, 0, key, free), ()
        elif phase in (4, 5):
            node = self.values[key] if key >= 0 else self.extra
            yield PUSH, (self, 6, used, 0, key, free), node

    def child_done(self, frame, result):
        _, phase, used, _, key, free = frame
        if phase == 10:  # a free key ended
            return (self, 3, used, 0, -1, free | {result}), ((("key",),) if self.emit else ())
        return (self, 7, used, 0, -1, free), ((("value",),) if self.emit else ())


class CallNode(Node):
    """One call: {"name": <tool name>, "arguments": <that tool's arguments>}.

    Frame: (node, phase, i, tool). Phases: 0 matching '{"name":' (i bytes done),
    1 after it, 2 after a space, 3 in the name (i = trie node), 4 before ',',
    5 after ',', 6 matching '"arguments":', 7 after it, 8 after a space,
    9 in the arguments, 10 before '}'."""
    __slots__ = ("names", "args", "trie")
    HEAD = b'{"name":'
    ARGS = b'"arguments":'

    def __init__(self, names: list[str], args: list[Node], keep=None):
        self.names, self.args = names, args
        words, ids = [], []
        for i, n in enumerate(names):
            for w in key_spellings(n, keep):
                words.append(w)
                ids.append(i)
        self.trie = Trie(words, ids, masks=False)

    def init(self):
        return [(self, 0, 0, -1)]

    _CANDS = {1: b'" ', 2: b'"', 4: b",", 5: b' "', 10: b"}"}

    def cands(self, frame):
        _, phase, i, tool = frame
        if phase == 0 or phase == 6:
            return _set((self.HEAD if phase == 0 else self.ARGS)[i:i + 1]), False
        if phase == 3:
            return self.trie.first[i], False
        if phase in (7, 8):
            first = self.args[tool].first()
            return (_union(_set(b" "), first) if phase == 7 else first), False
        return _set(self._CANDS.get(phase, b"")), False

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

    def child_done(self, frame, result):
        return (self, 10, 0, frame[3]), ()


class CallListNode(Node):
    """The whole output: [call, call, ...]. Frame: (node, phase, count).
    Phases: 0 at the start, 7 after one leading space (SentencePiece models write
    '▁[' for a first '['), 1 after '[', 2 in a call, 3 after a call, 4 after ',',
    5 after ', ', 6 closed (final)."""
    __slots__ = ("call", "min", "max")

    def __init__(self, call: CallNode, min_calls: int, max_calls: int):
        self.call, self.min, self.max = call, min_calls, max_calls

    def init(self):
        return [(self, 0, 0)]

    _CANDS = {0: b" [", 7: b"[", 1: b"]{", 3: b",]", 4: b" {", 5: b"{", 6: b""}

    def cands(self, frame):
        return _set(self._CANDS[frame[1]]), False

    def step(self, frame, b):
        _, phase, count = frame
        if phase == 0 or phase == 7:
            if b == LBRACKET:
                yield STAY, (self, 1, 0), ()
            elif b == SPACE and phase == 0:
                yield STAY, (self, 7, 0), ()
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

    def child_done(self, frame, result):
        return (self, 3, frame[2] + 1), ()

    @staticmethod
    def is_final(stack: tuple) -> bool:
        return len(stack) == 1 and stack[0][1] == 6


# ----------------------------------------------------------------------------- driver
def feed(stack: tuple, b: int, pos: int, out: list, events: tuple = ()) -> None:
    """Append to ``out`` every (stack, events) reachable by consuming byte ``b``
    at byte position ``pos``. Event positions are absolute."""
    top = stack[-1]
    for act in top[0].step(top, b):
        kind = act[0]
        if kind == STAY:
            ev = act[2]
            out.append((stack[:-1] + (act[1],), events + tuple((k, pos + d) for k, d in ev) if ev else events))
        elif kind == DONE:
            _pop(stack[:-1], b, pos, out, events, True, act[2] if len(act) > 2 else None)
        elif kind == REFEED:
            _pop(stack[:-1], b, pos, out, events, False, None)
        else:  # PUSH
            base = stack[:-1] + (act[1],)
            for child in (act[3] if len(act) > 3 else act[2].init()):
                feed(base + (child,), b, pos, out, events)


def stack_cands(stack: tuple) -> frozenset | None:
    """A superset of the bytes ``stack`` accepts next (None: any byte)."""
    top = stack[-1]
    c, passes = top[0].cands(top)
    if passes and c is not None:
        if len(stack) == 1:
            return c
        parent = stack[-2]
        res = parent[0].child_done(parent, None)
        if res is not None:
            c = _union(c, stack_cands(stack[:-2] + (res[0],)))
    return c


def _pop(stack, b, pos, out, events, consumed, result):
    parent = stack[-1]
    res = parent[0].child_done(parent, result)
    if res is None:
        return
    frame, ev = res
    stack = stack[:-1] + (frame,)
    end = pos + 1 if consumed else pos
    if ev:
        events = events + tuple((k, end) for (k,) in ev)
    if consumed:
        out.append((stack, events))
    else:
        feed(stack, b, pos, out, events)


def advance_stacks(stacks: tuple, data: bytes, pos: int) -> tuple[tuple, tuple]:
    """Feed ``data`` to every alternative; return the surviving stacks (deduplicated)
    and the events of the survivors (they agree: events depend only on the text)."""
    cur = [(s, ()) for s in stacks]
    for i, b in enumerate(data):
        nxt: list = []
        for s, ev in cur:
            feed(s, b, pos + i, nxt, ev)
        if not nxt:
            return (), ()
        if len(nxt) == 1:
            cur = nxt
            continue
        seen: dict = {}
        for s, ev in nxt:
            seen.setdefault(s, ev)
        cur = list(seen.items())
    stacks_out = tuple(s for s, _ in cur)
    return stacks_out, cur[0][1] if cur else ()
