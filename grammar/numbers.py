"""JSON numbers and integers: NumberNode, with length caps and the exact decimal
arithmetic that keeps every accepted prefix completable within minimum/maximum bounds
(as Python's json.loads reads the finished text)."""
from __future__ import annotations

import math
import struct
from decimal import Context, Decimal

from .nodes import DIGITS, REFEED, STAY, Node

# Every float repr without an exponent fits (it uses one from 1e16 and below 1e-4);
# an exponent (unbounded numbers only) has at most 2 digits, so no number overflows
# to infinity.
MAX_INT_DIGITS = 16
MAX_FRAC_DIGITS = 20
MAX_EXP_DIGITS = 2

_NUMBER_BYTES = frozenset(b"0123456789.eE")
_NUMBER_START = frozenset(b"0123456789-")
_EXP_SIGN = frozenset(b"0123456789+-")
_DIGITS_DOT = frozenset(b"0123456789.")
_DIGITS_E = frozenset(b"0123456789eE")

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
