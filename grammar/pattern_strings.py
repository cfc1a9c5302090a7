"""PatternStringNode: a JSON string whose decoded contents must match a character
DFA (``pattern`` and/or ``format``, see regex.py), within minLength/maxLength.

The string is read byte by byte with the escape / UTF-8 table of strings.py; each
character, once complete (raw UTF-8 or an escape such as ``\\u00e9`` or a surrogate
pair), advances the DFA. A byte is only accepted if the string can still be
completed: a partly written character must be able to become one the DFA can take
on from (``char_ranges``), and the DFA state must reach acceptance within the
characters left.
"""
from __future__ import annotations

import json

from .nodes import ALL, DONE, QUOTE, STAY, Node
from .regex import CharDFA, char_ranges, string_dfa
from .strings import DEFAULT_MAX_STRING, N_STRING_STATES, S_CLEAN, STRING_TABLE, StringPhase

_QUOTE_SET = frozenset(b'"')


def _tails() -> tuple[list[bytes], list[bytes]]:
    """Per escape / UTF-8 state inside a raw character: its least and greatest valid
    completions (UTF-8 preserves code point order, and each state's valid bytes
    form one range)."""
    lo, hi = [b""] * N_STRING_STATES, [b""] * N_STRING_STATES

    def tail(state: int, pick) -> bytes:
        out = b""
        while state != S_CLEAN:
            b = pick(x for x in range(256) if STRING_TABLE[state][x] >= 0)
            out += bytes((b,))
            state = STRING_TABLE[state][b]
        return out
    for s in range(N_STRING_STATES):
        if s != S_CLEAN and all(STRING_TABLE[s][b] < 0 or b >= 0x80 for b in range(256)):
            lo[s], hi[s] = tail(s, min), tail(s, max)
    return lo, hi


_MIN_TAIL, _MAX_TAIL = _tails()


class PatternStringNode(Node):
    """Frame: (node, phase, count, esc, buf, q): ``count`` characters complete, ``esc``
    the escape / UTF-8 state, ``buf`` the bytes of the character being written,
    ``q`` the DFA state after the complete ones."""
    __slots__ = ("dfa", "min", "max")

    def __init__(self, dfa: CharDFA, min_len: int, max_len: int):
        self.dfa, self.min, self.max = dfa, min_len, max_len

    def satisfiable(self) -> bool:
        return self.dfa.live(self.dfa.initial, self.min, self.max)

    def init(self):
        return [(self, StringPhase.BEFORE_QUOTE, 0, S_CLEAN, b"", self.dfa.initial)]

    def cands(self, frame):
        return (_QUOTE_SET if frame[1] == StringPhase.BEFORE_QUOTE else ALL), False

    def mask_frame(self, frame, lookahead: int):
        """A frame that allows the same tokens of up to ``lookahead`` bytes as ``frame``,
        for caching their mask: while minLength is met and more than the DFA's depth
        plus ``lookahead`` characters are left, the count changes nothing."""
        _, phase, count, esc, buf, q = frame
        if phase == StringPhase.INSIDE and count >= self.min and \
                self.max - count - lookahead > self.dfa.depth:
            return (self, phase, -1, esc, buf, q)
        return frame

    def step(self, frame, b):
        _, phase, count, esc, buf, q = frame
        if phase == StringPhase.BEFORE_QUOTE:
            if b == QUOTE:
                yield STAY, (self, StringPhase.INSIDE, 0, S_CLEAN, b"", q), ()
            return
        if esc == S_CLEAN and b == QUOTE:
            if count >= self.min and q in self.dfa.finals:
                yield DONE, ()
            return
        nxt = STRING_TABLE[esc][b]
        if nxt < 0 or (esc == S_CLEAN and count >= self.max):
            return
        buf += bytes((b,))
        lo, hi = self.min - count - 1, self.max - count - 1  # characters left after this one
        if nxt == S_CLEAN:
            ch = json.loads(b'"' + buf + b'"') if buf[0] == 0x5C else buf.decode("utf-8")
            q2 = self.dfa.step(q, ch)
            if q2 is not None and self.dfa.live(q2, lo, hi):
                yield STAY, (self, StringPhase.INSIDE, count + 1, S_CLEAN, b"", q2), ()
        elif self.dfa.can_take(q, char_ranges(buf, _MIN_TAIL[nxt], _MAX_TAIL[nxt]), lo, hi):
            yield STAY, (self, StringPhase.INSIDE, count, nxt, buf, q), ()


def string_node(s: dict) -> PatternStringNode:
    """The node of a normalized string schema with ``pattern`` and/or ``format``."""
    lo = s.get("minLength", 0)
    hi = s.get("maxLength", max(DEFAULT_MAX_STRING, lo))
    return PatternStringNode(string_dfa(s.get("pattern"), s.get("format"), hi), lo, hi)
