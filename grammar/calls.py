"""The call structure around the values: CallNode (one {"name": ..., "arguments": ...})
and CallListNode (the whole output, a JSON list of calls), with their phases named."""
from __future__ import annotations

from enum import IntEnum

from .literals import key_trie
from .nodes import COMMA, DONE, LBRACE, LBRACKET, PUSH, QUOTE, RBRACE, RBRACKET, SPACE, STAY, Node, \
    merge_cands


class CallPhase(IntEnum):
    HEAD = 0                # matching '{"name":' (i bytes done)
    AFTER_HEAD = 1
    AFTER_HEAD_SPACE = 2
    IN_NAME = 3             # i = trie node
    AFTER_NAME = 4          # before ','
    AFTER_COMMA = 5
    ARGS_KEY = 6            # matching '"arguments":' (i bytes done)
    AFTER_ARGS_KEY = 7
    AFTER_ARGS_KEY_SPACE = 8
    IN_ARGS = 9
    BEFORE_CLOSE = 10       # before '}'


class CallNode(Node):
    """One call: {"name": <tool name>, "arguments": <that tool's arguments>}.

    Frame: (node, phase, i, tool); ``phase`` is a CallPhase, ``i`` the bytes of a
    fixed text matched or the name's trie node, ``tool`` the tool named (-1: none
    yet)."""
    __slots__ = ("args", "trie")
    HEAD = b'{"name":'
    ARGS = b'"arguments":'

    def __init__(self, names: list[str], args: list[Node], keep=None):
        self.args = args
        self.trie = key_trie(names, keep, masks=False)

    def init(self):
        return [(self, CallPhase.HEAD, 0, -1)]

    _CANDS = {CallPhase.AFTER_HEAD: b'" ', CallPhase.AFTER_HEAD_SPACE: b'"', CallPhase.AFTER_NAME: b",",
              CallPhase.AFTER_COMMA: b' "', CallPhase.BEFORE_CLOSE: b"}"}

    def cands(self, frame):
        _, phase, i, tool = frame
        if phase == CallPhase.HEAD or phase == CallPhase.ARGS_KEY:
            return frozenset((self.HEAD if phase == CallPhase.HEAD else self.ARGS)[i:i + 1]), False
        if phase == CallPhase.IN_NAME:
            return self.trie.first[i], False
        if phase in (CallPhase.AFTER_ARGS_KEY, CallPhase.AFTER_ARGS_KEY_SPACE):
            first = self.args[tool].first()
            if phase == CallPhase.AFTER_ARGS_KEY:
                first = merge_cands(frozenset(b" "), first)
            return first, False
        return frozenset(self._CANDS.get(phase, b"")), False

    def step(self, frame, b):
        _, phase, i, tool = frame
        if phase == CallPhase.HEAD or phase == CallPhase.ARGS_KEY:
            lit, after = ((self.HEAD, CallPhase.AFTER_HEAD) if phase == CallPhase.HEAD
                          else (self.ARGS, CallPhase.AFTER_ARGS_KEY))
            if b == lit[i]:
                yield STAY, ((self, after, 0, tool) if i + 1 == len(lit) else (self, phase, i + 1, tool)), ()
        elif phase in (CallPhase.AFTER_HEAD, CallPhase.AFTER_HEAD_SPACE):
            if b == QUOTE:
                yield STAY, (self, CallPhase.IN_NAME, 0, -1), ()
            elif b == SPACE and phase == CallPhase.AFTER_HEAD:
                yield STAY, (self, CallPhase.AFTER_HEAD_SPACE, 0, -1), ()
        elif phase == CallPhase.IN_NAME:
            child = self.trie.children[i].get(b)
            if child is None:
                return
            k = self.trie.terminal[child]
            if k >= 0:
                yield STAY, (self, CallPhase.AFTER_NAME, 0, k), (("name", 1),)
            else:
                yield STAY, (self, CallPhase.IN_NAME, child, -1), ()
        elif phase == CallPhase.AFTER_NAME:
            if b == COMMA:
                yield STAY, (self, CallPhase.AFTER_COMMA, 0, tool), ()
        elif phase == CallPhase.AFTER_COMMA:
            if b == SPACE:
                yield STAY, (self, CallPhase.ARGS_KEY, 0, tool), ()
            elif b == QUOTE:
                yield STAY, (self, CallPhase.ARGS_KEY, 1, tool), ()
        elif phase == CallPhase.AFTER_ARGS_KEY and b == SPACE:
            yield STAY, (self, CallPhase.AFTER_ARGS_KEY_SPACE, 0, tool), ()
        elif phase in (CallPhase.AFTER_ARGS_KEY, CallPhase.AFTER_ARGS_KEY_SPACE):
            yield PUSH, (self, CallPhase.IN_ARGS, 0, tool), self.args[tool]
        elif phase == CallPhase.BEFORE_CLOSE and b == RBRACE:
            yield DONE, ()

    def child_done(self, frame, result):
        return (self, CallPhase.BEFORE_CLOSE, 0, frame[3]), ()


class CallListPhase(IntEnum):
    START = 0
    AFTER_OPEN = 1            # after '['
    IN_CALL = 2
    AFTER_CALL = 3
    AFTER_COMMA = 4
    AFTER_COMMA_SPACE = 5     # after ', '
    CLOSED = 6                # final
    AFTER_LEADING_SPACE = 7   # SentencePiece models write '▁[' for a first '['


class CallListNode(Node):
    """The whole output: [call, call, ...]. Frame: (node, phase, count); ``phase`` is
    a CallListPhase, ``count`` the calls completed."""
    __slots__ = ("call", "min", "max")

    def __init__(self, call: CallNode, min_calls: int, max_calls: int):
        self.call, self.min, self.max = call, min_calls, max_calls

    def init(self):
        return [(self, CallListPhase.START, 0)]

    _CANDS = {CallListPhase.START: b" [", CallListPhase.AFTER_LEADING_SPACE: b"[",
              CallListPhase.AFTER_OPEN: b"]{", CallListPhase.AFTER_CALL: b",]",
              CallListPhase.AFTER_COMMA: b" {", CallListPhase.AFTER_COMMA_SPACE: b"{",
              CallListPhase.CLOSED: b""}

    def cands(self, frame):
        return frozenset(self._CANDS[frame[1]]), False

    def step(self, frame, b):
        _, phase, count = frame
        if phase == CallListPhase.START or phase == CallListPhase.AFTER_LEADING_SPACE:
            if b == LBRACKET:
                yield STAY, (self, CallListPhase.AFTER_OPEN, 0), ()
            elif b == SPACE and phase == CallListPhase.START:
                yield STAY, (self, CallListPhase.AFTER_LEADING_SPACE, 0), ()
        elif phase == CallListPhase.AFTER_OPEN:
            if b == RBRACKET and self.min == 0:
                yield STAY, (self, CallListPhase.CLOSED, 0), (("end", 1),)
            elif b == LBRACE and self.max > 0:
                yield PUSH, (self, CallListPhase.IN_CALL, count), self.call
        elif phase == CallListPhase.AFTER_CALL:
            if b == COMMA and count < self.max:
                yield STAY, (self, CallListPhase.AFTER_COMMA, count), ()
            elif b == RBRACKET and count >= self.min:
                yield STAY, (self, CallListPhase.CLOSED, count), (("end", 1),)
        elif phase == CallListPhase.AFTER_COMMA and b == SPACE:
            yield STAY, (self, CallListPhase.AFTER_COMMA_SPACE, count), ()
        elif phase in (CallListPhase.AFTER_COMMA, CallListPhase.AFTER_COMMA_SPACE) and b == LBRACE:
            yield PUSH, (self, CallListPhase.IN_CALL, count), self.call

    def child_done(self, frame, result):
        return (self, CallListPhase.AFTER_CALL, frame[2] + 1), ()

    @staticmethod
    def is_final(stack: tuple) -> bool:
        return len(stack) == 1 and stack[0][1] == CallListPhase.CLOSED

