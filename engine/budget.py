"""Shortest valid completion of a partial output, for closing it within a token budget."""
from __future__ import annotations

from toolprm.grammar import State
from toolprm.grammar.automaton import CallListNode
from toolprm.grammar.index import step_byte

# Bytes tried in order: ones that close what is open first, then the shortest values,
# then anything that keeps going (e.g. a string below its minLength).
_PRIORITY = b'"]}0,:ntf[{a' + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_MAX_BYTES = 1 << 14


def completion_bytes(state: State) -> bytes:
    """A short byte string that takes ``state`` to a complete call list (greedy: each
    byte is the first of _PRIORITY that the automaton accepts)."""
    out = bytearray()
    cur = state.stacks
    while not any(CallListNode.is_final(s) for s in cur):
        for b in _PRIORITY:
            nxt = step_byte(cur, b)
            if nxt:
                out.append(b)
                cur = nxt
                break
        else:
            raise AssertionError(f"dead end in the grammar after {state.text!r}")
        if len(out) > _MAX_BYTES:
            raise AssertionError("no completion found within 16 KiB")
    return bytes(out)


def completion_tokens(state: State) -> list[int]:
    return state.grammar.vocab.longest_match(completion_bytes(state))
