"""Token index: which tokens each automaton configuration allows.

Two paths, both caching their results per configuration:

- inside a free string (the one place where almost every token is allowed) the
  mask comes from per-token tables computed once per vocabulary: tokens that stay
  inside the string, filtered by the length budget left, plus the tokens that
  close it, whose tails are checked once per continuation;
- everywhere else a walk over the sorted vocabulary visits only the prefixes the
  automaton accepts, which is a small part of it.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict

import numpy as np

from .automaton import QUOTE, StringNode, advance_stacks, feed
from .vocab import Vocabulary


class _LRU(OrderedDict):
    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key, value):
        self[key] = value
        if len(self) > self.maxsize:
            self.popitem(last=False)
        return value


def step_byte(stacks: tuple, b: int) -> tuple:
    """Configurations after one byte (events ignored), deduplicated."""
    out: list = []
    for s in stacks:
        feed(s, b, 0, out)
    return tuple(dict.fromkeys(s for s, _ in out))


class TokenIndex:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self._ids = _LRU(65536)      # configuration -> sorted allowed token ids (walk path)
        self._masks = _LRU(512)      # (continuation, budget, min_left) -> dense mask
        self._exits = _LRU(4096)     # continuation -> bool per string-closing token
        self._forced = _LRU(65536)   # configuration -> forced bytes

    def mask(self, stacks: tuple, final: bool) -> np.ndarray:
        """A read-only bool mask over the vocabulary (EOS set exactly when final)."""
        fast = self._string_case(stacks)
        if fast is not None:
            m = fast
        else:
            ids = self._ids.get(stacks)
            if ids is None:
                ids = self._ids.put(stacks, self._walk(stacks))
            m = np.zeros(self.vocab.size, dtype=bool)
            m[ids] = True
            if final:
                m[self.vocab.eos_ids] = True
            m.flags.writeable = False
        return m

    def _string_case(self, stacks: tuple):
        if len(stacks) != 1:
            return None
        stack = stacks[0]
        top = stack[-1]
        node = top[0]
        if not isinstance(node, StringNode) or top[1] != 1 or top[3] != 0:
            return None
        budget, min_left = node.max - top[2], max(0, node.min - top[2])
        cont = (stack[:-1], node)
        key = (cont, budget, min_left)
        m = self._masks.get(key)
        if m is not None:
            return m
        stay_n, exit_ids, exit_n, exit_tail = self.vocab.string_tables()
        ok = self._exits.get(cont)
        if ok is None:
            closed = step_byte((stack[:-1] + ((node, 1, node.min, 0),),), QUOTE)
            ok = np.array([not t or bool(advance_stacks(closed, t, 0)[0]) for t in exit_tail],
                          dtype=bool)
            self._exits.put(cont, ok)
        m = (stay_n >= 0) & (stay_n <= budget)
        sel = ok & (exit_n <= budget) & (exit_n >= min_left)
        m[exit_ids[sel]] = True
        m.flags.writeable = False
        return self._masks.put(key, m)

    def _walk(self, stacks: tuple) -> np.ndarray:
        """Allowed token ids, by a depth-first walk of the sorted vocabulary that
        only descends into byte prefixes the automaton accepts."""
        vb, ids = self.vocab.sorted_bytes, self.vocab.sorted_ids
        found: list[int] = []

        def walk(lo: int, hi: int, depth: int, cur: tuple) -> None:
            i = lo
            while i < hi and len(vb[i]) == depth:
                found.append(ids[i])
                i += 1
            while i < hi:
                b = vb[i][depth]
                j = bisect_left(vb, vb[i][:depth] + bytes((b + 1,)), i, hi) if b < 255 else hi
                nxt = step_byte(cur, b)
                if nxt:
                    walk(i, j, depth + 1, nxt)
                i = j

        walk(0, len(vb), 0, stacks)
        return np.array(sorted(found), dtype=np.int64)

    def forced_bytes(self, stacks: tuple) -> bytes:
        """The bytes that must follow: the continuation while it is unique. Where the
        only choice is an optional separator space followed by a unique byte, the
        canonical form (json.dumps' ", " and ": ") is taken, but a trailing space is
        left to the model so it can merge it with the next token."""
        got = self._forced.get(stacks)
        if got is not None:
            return got
        out = bytearray()
        cur = stacks
        pending_space = False
        while True:
            nexts = [b for b in range(256) if step_byte(cur, b)]
            if len(nexts) == 2 and nexts[0] == 0x20 and not pending_space:
                after = step_byte(cur, 0x20)
                if [b for b in range(256) if step_byte(after, b)] == [nexts[1]]:
                    pending_space = True
                    cur = after
                    continue
                break
            if len(nexts) != 1:
                break
            if pending_space:
                out.append(0x20)
                pending_space = False
            out.append(nexts[0])
            cur = step_byte(cur, nexts[0])
        return self._forced.put(stacks, bytes(out))
