"""The node protocol of the byte-level pushdown automaton, and the driver that feeds
bytes to stacks of frames; every node family (strings, literals, numbers,
containers, calls) implements this protocol.

A parser configuration is a *stack*: a tuple of frames, bottom first. A frame is a
tuple whose first item is the Node that owns it; the rest is that node's small,
hashable state (its phase first, an ``IntEnum`` of the node's module). Frames hold
no absolute positions, so equal configurations reached by different beams are equal
and share cached token masks.

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

STAY, DONE, REFEED, PUSH = range(4)
QUOTE, SPACE, COMMA, COLON = b'" ,:'
LBRACE, RBRACE, LBRACKET, RBRACKET = b"{}[]"
DIGITS = frozenset(b"0123456789")

ALL = None  # cands(): any byte


def merge_cands(a: frozenset | None, b: frozenset | None) -> frozenset | None:
    """The union of two ``cands`` byte sets (None: any byte)."""
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
                out = merge_cands(out, f[0].cands(f)[0])
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
            c = merge_cands(c, stack_cands(stack[:-2] + (res[0],)))
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


def step_byte(stacks: tuple, b: int) -> tuple:
    """Configurations after one byte (events ignored), deduplicated."""
    out: list = []
    for s in stacks:
        feed(s, b, 0, out)
    return tuple(dict.fromkeys(s for s, _ in out))


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
