"""Free JSON strings: the escape / UTF-8 transition table (shared with the vocabulary's
per-token string tables), StringNode and FreeKeyNode (additionalProperties keys)."""
from __future__ import annotations

import json
from enum import IntEnum

from .nodes import ALL, DONE, QUOTE, STAY, Node

BSLASH = ord("\\")
ESCAPABLE = frozenset(b'"\\/bfnrt')
HEX = frozenset(b"0123456789abcdefABCDEF")

DEFAULT_MAX_STRING = 256   # strings without maxLength stop here, so they cannot run away
DEFAULT_MAX_KEY = 128      # free (additionalProperties) keys

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

_QUOTE_SET = frozenset(b'"')


class StringPhase(IntEnum):
    BEFORE_QUOTE = 0   # expects the opening quote
    INSIDE = 1


class StringNode(Node):
    """A free JSON string. Frame: (node, phase, count, esc).

    ``phase`` is a StringPhase. ``count`` is code points begun (as Python counts
    them, which is what minLength/maxLength mean). ``esc`` is the escape / UTF-8
    state (S_* above).
    """
    __slots__ = ("min", "max")

    def __init__(self, min_len: int = 0, max_len: int = DEFAULT_MAX_STRING):
        self.min, self.max = min_len, max_len

    def init(self):
        return [(self, StringPhase.BEFORE_QUOTE, 0, S_CLEAN)]

    def cands(self, frame):
        return (_QUOTE_SET if frame[1] == StringPhase.BEFORE_QUOTE else ALL), False

    def step(self, frame, b):
        _, phase, count, esc = frame
        if phase == StringPhase.BEFORE_QUOTE:
            if b == QUOTE:
                yield STAY, (self, StringPhase.INSIDE, 0, S_CLEAN), ()
            return
        if esc == S_CLEAN:
            if b == QUOTE:
                if count >= self.min:
                    yield DONE, ()
                return
            nxt = STRING_TABLE[S_CLEAN][b]
            if nxt < 0 or count >= self.max:
                return
            yield STAY, (self, StringPhase.INSIDE, count + 1, nxt), ()
        else:
            nxt = STRING_TABLE[esc][b]
            if nxt >= 0:
                yield STAY, (self, StringPhase.INSIDE, count, nxt), ()


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
        return [self.frame(frozenset())]

    def frame(self, used: frozenset) -> tuple:
        return (self, StringPhase.BEFORE_QUOTE, 0, S_CLEAN, b"", used)

    def taken(self, text: bytes, used: frozenset) -> str | None:
        """The key if ``text`` (complete string content) may be used, else None."""
        key = json.loads(b'"' + text + b'"')
        return None if key in self.declared or key in used else key

    def step(self, frame, b):
        _, phase, count, esc, text, used = frame
        if phase == StringPhase.BEFORE_QUOTE:
            if b == QUOTE:
                yield STAY, (self, StringPhase.INSIDE, 0, S_CLEAN, b"", used), ()
            return
        if esc == S_CLEAN and b == QUOTE:
            key = self.taken(text, used)
            if key is not None:
                yield DONE, (), key
            return
        nxt = STRING_TABLE[esc][b]
        if nxt < 0:
            return
        if esc == S_CLEAN:
            if count >= self.max:
                return
            count += 1
        text += bytes((b,))
        # At the length cap the key must close next: only go there if it may.
        if nxt == S_CLEAN and count == self.max and self.taken(text, used) is None:
            return
        yield STAY, (self, StringPhase.INSIDE, count, nxt, text, used), ()
