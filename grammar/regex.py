"""String contents as regular languages: JSON Schema ``pattern`` and ``format``.

``pattern`` is read the way the reference validator (``jsonschema``) applies it:
Python's ``re.search``, so unanchored on either side unless the pattern begins
with ``^`` / ends with ``$`` (which also allows one trailing newline). interegular
turns the regex into a character DFA; features it cannot express exactly, or reads
differently from Python, are refused with RegexError:

- lookaround, backreferences, inline flags other than a leading ``(?i)``, word
  boundaries, ``\\A``/``\\Z``: not regular or not supported by interegular;
- ``\\D``, ``\\W``, ``\\S`` and ``\\d``/``\\w``/``\\s`` inside a negated class:
  Python's classes are Unicode-wide, interegular's ASCII, so the complement would
  let through characters Python excludes (the plain classes are only stricter);
- ``^``/``$`` anywhere but at the very ends, and anchors with a top-level ``|``;
- a class opening with ``]`` (interegular misreads it).
Each DFA is also cross-checked: its first strings must match under Python's re.

``format`` names a regular language of its own (FORMATS); an unknown format is
refused, never ignored.
"""
from __future__ import annotations

import bisect
import random
import re
import threading
from functools import lru_cache

import interegular
import interegular.fsm
import jsonschema
from interegular.fsm import anything_else


class RegexError(ValueError):
    """A pattern or format the grammar cannot enforce exactly (the message says why)."""


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = "|".join([  # RFC 3986's IPv6address, one alternative per position of "::"
    rf"(?:{_H16}:){{6}}{_LS32}",
    rf"::(?:{_H16}:){{5}}{_LS32}",
    rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
    rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
    rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
])
_DATE = r"[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)" \
        r"|02-(?:0[1-9]|1[0-9]|2[0-9]))"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_URI_CHAR = r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})"

#: format -> the (full-match) regular language the grammar enforces for it. Each is
#: a subset of the format's RFC grammar (README, "Schema coverage", says where it is
#: coarser: February 29 in any year, the leap second at any minute, uri's structure).
FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": rf"{_DATE}[Tt]{_TIME}",
    "email": r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*"
             r"@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*",
    "uuid": r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "uri": rf"[A-Za-z][A-Za-z0-9+.\-]*:{_URI_CHAR}*",
}

#: jsonschema asserting FORMATS (it treats format as an annotation by default): filters
#: const/enum values as the grammar's strings are filtered.
FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
for _name, _rx in FORMATS.items():
    FORMAT_CHECKER.checks(_name)(lambda v, rx=_rx: not isinstance(v, str) or re.fullmatch(rx, v) is not None)

_FLAG = re.compile(r"\(\?[aiLmsux-]")
_CROSS_CHECK = 300   # random strings of the DFA compared with Python's re
MAX_PATTERN = 1000   # characters of a pattern
MAX_STATES = 4000    # states of any automaton built from a pattern (their number can be
                     # exponential in the pattern's length: hostile specs must stop early)

# interegular builds every automaton through fsm.crawl(); a thread-local budget makes
# it stop at MAX_STATES (unset for other users of interegular in the process).
_budget = threading.local()
_crawl = interegular.fsm.crawl


def _bounded_crawl(alphabet, initial, final, follow):
    limit = getattr(_budget, "states", None)
    if limit is None:
        return _crawl(alphabet, initial, final, follow)
    seen = [0]

    def counted(state):
        seen[0] += 1
        if seen[0] > limit:
            raise RegexError(f"its automaton has more than {limit} states")
        return final(state)
    return _crawl(alphabet, initial, counted, follow)


interegular.fsm.crawl = _bounded_crawl


def _scan(pattern: str) -> tuple[bool, bool, str]:
    """(anchored at start, anchored at end, body without those anchors); raises
    RegexError for the features interegular cannot match exactly (module doc)."""
    i, n, depth, top_bar = 0, len(pattern), 0, False
    in_class, negated, class_start = False, False, 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            e = pattern[i + 1:i + 2]
            if e in ("D", "W", "S") or (in_class and negated and e in ("d", "w", "s")):
                raise RegexError(f"\\{e} {'in a negated class ' if e.islower() else ''}is not supported: "
                                 "Python's \\d, \\w, \\s are Unicode-wide, so their complement cannot be "
                                 "matched exactly (spell the characters out, e.g. [^0-9])")
            if e.isdigit() and e != "0" or e == "k":
                raise RegexError("backreferences are not supported: they are not regular")
            i += 2
            continue
        if in_class:
            if c == "]" and i > class_start:
                in_class = False
            elif c == "]":
                raise RegexError("a character class opening with ']' is not supported: escape it as '\\]'")
        elif c == "[":
            in_class, negated = True, pattern.startswith("^", i + 1)
            class_start = i + 1 + negated
        elif c == "(":
            if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
                raise RegexError("lookaround ((?=, (?!, (?<=, (?<!) is not supported")
            if pattern.startswith("(?P=", i):
                raise RegexError("backreferences are not supported: they are not regular")
            if _FLAG.match(pattern, i):
                raise RegexError("inline flags are not supported (only a leading (?i))")
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            top_bar = True
        elif c == "^" and i != 0 or c == "$" and i != n - 1:
            raise RegexError(f"{c!r} is only supported at the very {'start' if c == '^' else 'end'} of the pattern")
        i += 1
    start, end = pattern.startswith("^"), pattern.endswith("$") and not pattern.endswith("\\$")
    if (start or end) and top_bar:
        raise RegexError("anchors (^, $) with a top-level '|' are not supported: group the alternatives")
    return start, end, pattern[start:n - end if end else n]


_UNICODE_ESCAPE = re.compile(r"u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})")


def _expand_unicode_escapes(pattern: str) -> str:
    """``\\uXXXX`` / ``\\UXXXXXXXX`` (which interegular lacks) as the characters themselves."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] != "\\":
            out.append(pattern[i])
            i += 1
            continue
        m = _UNICODE_ESCAPE.match(pattern, i + 1)
        if m:
            out.append(re.escape(chr(int(m.group(1) or m.group(2), 16))))
            i = m.end()
        else:
            out.append(pattern[i:i + 2])
            i += 2
    return "".join(out)


def _fsm(regex: str):
    _budget.states = MAX_STATES
    try:
        return interegular.parse_pattern(regex).to_fsm()
    except RegexError:
        raise
    except Exception as e:  # interegular's Unsupported and parse errors
        raise RegexError(f"the regex is not supported: {e}") from None
    finally:
        _budget.states = None


def _intersect(a, b):
    _budget.states = MAX_STATES
    try:
        return a & b
    finally:
        _budget.states = None


_OTHERS = "\n é_Z0\ue000\U0001F600"  # samples for interegular's "any other character"


def _cross_check(fsm, python_regex: str) -> None:
    """Random strings of the DFA (seeded) must fully match under Python's re: a guard
    against interegular reading a pattern differently."""
    dfa, rng, cap = CharDFA(fsm, 40), random.Random(0), 40
    others = [c for c in _OTHERS if c not in fsm.alphabet._symbol_mapping]
    for _ in range(_CROSS_CHECK):
        q, text = dfa.initial, ""
        while True:
            left = cap - len(text) - 1
            steps = [(s, t) for s, t in dfa.map.get(q, {}).items() if dfa.live(t, 0, left)
                     and (dfa.chars.get(s) or s == dfa.other and others)]
            if not steps or q in dfa.finals and rng.random() < 0.3:
                break
            sym, q = rng.choice(steps)
            pool = dfa.chars.get(sym, [])
            text += chr(rng.choice(pool)) if pool and (sym != dfa.other or rng.random() < 0.5) \
                else rng.choice(others)
        if q in dfa.finals and re.fullmatch(python_regex, text) is None:
            raise RegexError(f"the regex engine reads this pattern differently from Python's re "
                             f"(it would accept {text!r})")


@lru_cache(maxsize=256)
def pattern_fsm(pattern: str):
    """The DFA of string contents that ``re.search(pattern, s)`` accepts."""
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"longer than {MAX_PATTERN} characters")
    try:
        re.compile(pattern)
    except re.error as e:
        raise RegexError(f"not a valid regular expression: {e}") from None
    flags = "(?i)" if pattern.startswith("(?i)") else ""  # only stricter than Python's (ASCII case)
    start, end, body = _scan(_expand_unicode_escapes(pattern[len(flags):]))
    _cross_check(_fsm(flags + body), f"{flags}(?:{body})")
    full = flags + ("" if start else r"[\s\S]*") + f"(?:{body})" + (r"\n?" if end else r"[\s\S]*")
    return _fsm(full)


@lru_cache(maxsize=32)
def format_fsm(name: str):
    if name not in FORMATS:
        raise RegexError(f"format {name!r} is not enforced by the grammar (known: {', '.join(FORMATS)}); "
                         "drop it or express it as a pattern")
    return _fsm(FORMATS[name])


_SURROGATES = (0xD800, 0xDFFF)


class CharDFA:
    """A character DFA with, per state, the string lengths that reach acceptance
    (up to ``cap`` characters), so that a string node never enters a dead end."""

    def __init__(self, fsm, cap: int):
        self.alphabet = fsm.alphabet
        self.map = fsm.map
        self.initial = fsm.initial
        self.finals = fsm.finals
        mask = (1 << (cap + 1)) - 1
        states = set(fsm.states) | set(self.map)
        reach = {q: int(q in self.finals) for q in states}
        for _ in range(cap + 1):  # bit k of reach[q]: a final state is k characters away
            new = {q: (int(q in self.finals) | _or(reach[t] << 1 for t in self.map.get(q, {}).values())) & mask
                   for q in states}
            if new == reach:
                break
            reach = new
        self.reach = reach
        # The longest of the shortest ways to acceptance: past it, how many characters
        # are left no longer matters to liveness (see PatternStringNode.mask_frame).
        self.depth = max(((r & -r).bit_length() - 1 for r in reach.values() if r), default=0)
        by_sym: dict = {}
        for ch, sym in self.alphabet._symbol_mapping.items():
            if ch is not anything_else:
                by_sym.setdefault(sym, []).append(ord(ch))
        self.chars = {s: sorted(v) for s, v in by_sym.items()}
        self.explicit = sorted(c for v in by_sym.values() for c in v)
        self.other = self.alphabet._symbol_mapping.get(anything_else)

    def step(self, q, ch: str):
        sym = self.alphabet[ch]
        return None if sym is None else self.map.get(q, {}).get(sym)

    def live(self, q, lo: int, hi: int) -> bool:
        """Can state ``q`` reach acceptance in lo..hi more characters?"""
        if hi < lo or hi < 0:
            return False
        lo = max(lo, 0)
        return bool((self.reach[q] >> lo) & ((1 << (hi - lo + 1)) - 1))

    def can_take(self, q, ranges: list[tuple[int, int]], lo: int, hi: int) -> bool:
        """Is there a character in ``ranges`` (code points, surrogates excluded) after
        which ``q`` can still reach acceptance in lo..hi more characters?"""
        for sym, t in self.map.get(q, {}).items():
            if not self.live(t, lo, hi):
                continue
            for a, b in ranges:
                if sym == self.other:
                    n = bisect.bisect_right(self.explicit, b) - bisect.bisect_left(self.explicit, a)
                    if b - a + 1 > n:
                        return True
                chars = self.chars.get(sym, ())
                k = bisect.bisect_left(chars, a)
                if k < len(chars) and chars[k] <= b:
                    return True
        return False


def _or(values) -> int:
    out = 0
    for v in values:
        out |= v
    return out


@lru_cache(maxsize=256)
def string_dfa(pattern: str | None, fmt: str | None, cap: int) -> CharDFA:
    """The DFA of string contents matching ``pattern`` and ``format`` (both optional,
    at least one given), with acceptance lengths up to ``cap``."""
    fsms = ([pattern_fsm(pattern)] if pattern is not None else []) + \
        ([format_fsm(fmt)] if fmt is not None else [])
    fsm = fsms[0] if len(fsms) == 1 else _intersect(fsms[0], fsms[1])
    return CharDFA(fsm, cap)


def char_ranges(buf: bytes, min_tail: bytes, max_tail: bytes) -> list[tuple[int, int]]:
    """The code points a partly written JSON string character can still become:
    ``buf`` is its bytes so far (raw UTF-8 or an escape); for raw UTF-8,
    ``min_tail``/``max_tail`` are its least and greatest valid completions."""
    if not buf.startswith(b"\\"):
        return [(ord((buf + min_tail).decode()), ord((buf + max_tail).decode()))]
    if buf == b"\\":
        return [(0, _SURROGATES[0] - 1), (_SURROGATES[1] + 1, 0x10FFFF)]
    hex1 = buf[2:6].decode()
    if len(hex1) < 4:  # the first \u escape is not complete
        lo, hi = int(hex1.ljust(4, "0"), 16), int(hex1.ljust(4, "f"), 16)
        out = [(a, b) for a, b in ((lo, min(hi, 0xD7FF)), (max(lo, 0xE000), hi)) if a <= b]
        a, b = max(lo, 0xD800), min(hi, 0xDBFF)  # high surrogates: a pair follows
        if a <= b:
            out.append((0x10000 + ((a - 0xD800) << 10), 0x10000 + ((b - 0xD800) << 10) + 0x3FF))
        return out
    base = 0x10000 + ((int(hex1, 16) - 0xD800) << 10)  # a high surrogate: the low one follows
    low = buf[8:].decode()
    lo, hi = max(int(low.ljust(4, "0"), 16), 0xDC00), min(int(low.ljust(4, "f"), 16), 0xDFFF)
    return [(base + lo - 0xDC00, base + hi - 0xDC00)] if lo <= hi else []
