"""Token index: which tokens each automaton configuration allows, and where a token
leads.

A set of configurations allows the union of what each configuration allows, so
masks are built per configuration (one stack) and OR-ed. Per configuration, two
paths, both caching their results:

- inside a free string (the one place where almost every token is allowed) the
  mask comes from per-token tables computed once per vocabulary and escape state:
  tokens that stay inside the string, filtered by the length budget left, plus
  the tokens that close it, whose tails are checked once per continuation;
- everywhere else a walk over the sorted vocabulary visits only the prefixes the
  automaton accepts, which is a small part of it.

Advancing is table look-ups too: a token that stays inside a free string moves
its count and escape state (no byte loop); any other (configuration, token) pair
is fed byte by byte once and cached.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict

import numpy as np

from .automaton import QUOTE, SPACE, CallListNode, FreeKeyNode, StringNode, advance_stacks, feed
from .vocab import Vocabulary


class _LRU(OrderedDict):
    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get(self, key, default=None):
        try:
            value = self[key]
        except KeyError:
            return default
        self.move_to_end(key)
        return value

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


def _frozen(m: np.ndarray) -> np.ndarray:
    m.flags.writeable = False
    return m


class TokenIndex:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self._ids = _LRU(65536)      # one stack -> sorted allowed token ids (walk path)
        self._dense = _LRU(1024)     # configurations -> dense mask
        self._strings = _LRU(512)    # (continuation, esc, budget, min_left) -> dense mask
        self._exits = _LRU(4096)     # (continuation, esc) -> bool per string-closing token
        self._stays = _LRU(256)      # (esc, budget) -> dense mask of tokens staying inside
        self._forced = _LRU(65536)   # configurations -> forced bytes
        self._advance = _LRU(65536)  # (configurations, token) -> (configurations, events)

    # ------------------------------------------------------------------ masks
    def mask(self, stacks: tuple, final: bool) -> np.ndarray:
        """A read-only bool mask over the vocabulary (EOS set exactly when final)."""
        m = self._dense.get(stacks)
        if m is not None:
            return m
        if len(stacks) == 1 and not final:
            m = self._single(stacks[0])
        else:
            m = np.zeros(self.vocab.size, dtype=bool)
            for s in stacks:
                m |= self._single(s)
            if final:
                m[self.vocab.eos_ids] = True
            m = _frozen(m)
        return self._dense.put(stacks, m)

    def _single(self, stack: tuple) -> np.ndarray:
        top = stack[-1]
        node = top[0]
        if isinstance(node, StringNode) and top[1] == 1:
            if type(node) is StringNode:
                return self._string_mask(stack)
            return self._free_key_mask(stack)
        key = (stack,)
        ids = self._ids.get(key)
        if ids is None:
            ids = self._ids.put(key, self._walk(key))
        m = np.zeros(self.vocab.size, dtype=bool)
        m[ids] = True
        return _frozen(m)

    def _stay_mask(self, esc: int, budget: int) -> np.ndarray:
        key = (esc, budget)
        m = self._stays.get(key)
        if m is None:
            stay_n = self.vocab.string_tables(esc)[0]
            m = self._stays.put(key, _frozen((stay_n >= 0) & (stay_n <= budget)))
        return m

    def _string_mask(self, stack: tuple) -> np.ndarray:
        node, _, count, esc = stack[-1]
        budget, min_left = node.max - count, max(0, node.min - count)
        cont = (stack[:-1], node)
        key = (cont, esc, budget, min_left)
        m = self._strings.get(key)
        if m is not None:
            return m
        _, _, exit_ids, exit_n, exit_tail = self.vocab.string_tables(esc)
        ok = self._exits.get((cont, esc))
        if ok is None:
            closed = step_byte((stack[:-1] + ((node, 1, node.min, 0),),), QUOTE)
            ok = np.array([not t or bool(advance_stacks(closed, t, 0)[0]) for t in exit_tail],
                          dtype=bool)
            self._exits.put((cont, esc), ok)
        m = self._stay_mask(esc, budget).copy()
        sel = ok & (exit_n <= budget) & (exit_n >= min_left)
        m[exit_ids[sel]] = True
        return self._strings.put(key, _frozen(m))

    def _free_key_mask(self, stack: tuple) -> np.ndarray:
        """A free key: which keys are taken depends on its text, so the closing tokens
        (few) are checked exactly, as are, when a taken key is as long as the cap,
        the tokens that would fill the key to the cap."""
        key = (stack,)
        ids = self._ids.get(key)
        if ids is None:
            node, _, count, esc, _, used = stack[-1]
            budget = node.max - count
            stay_n, stay_esc, exit_ids, exit_n, _ = self.vocab.string_tables(esc)
            tb = self.vocab.token_bytes
            sure = (stay_n >= 0) & (stay_n <= budget)
            check = [int(t) for t in exit_ids[exit_n <= budget]]
            if any(len(k) == node.max for k in (*node.declared, *used)):
                edge = sure & (stay_n == budget) & (stay_esc == 0)
                sure &= ~edge
                check += np.flatnonzero(edge).tolist()
            extra = [t for t in check if advance_stacks(key, tb[t], 0)[0]]
            ids = self._ids.put(key, np.union1d(np.flatnonzero(sure), np.array(extra, dtype=np.int64)))
        m = np.zeros(self.vocab.size, dtype=bool)
        m[ids] = True
        return _frozen(m)

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

    # ------------------------------------------------------------------ advancing
    def advance(self, stacks: tuple, token_id: int, data: bytes) -> tuple[tuple, tuple]:
        """Configurations after the token's bytes (empty if it is not allowed) and
        its events, with positions relative to the token's start."""
        if len(stacks) == 1:
            stack = stacks[0]
            top = stack[-1]
            node = top[0]
            if type(node) is StringNode and top[1] == 1:
                stay_n, stay_esc = self.vocab.string_tables(top[3])[:2]
                n = stay_n[token_id]
                if n >= 0:
                    count = top[2] + int(n)
                    if count > node.max:
                        return (), ()
                    return (stack[:-1] + ((node, 1, count, int(stay_esc[token_id])),),), ()
        key = (stacks, token_id)
        got = self._advance.get(key)
        if got is None:
            got = self._advance.put(key, advance_stacks(stacks, data, 0))
        return got

    # ------------------------------------------------------------------ jump-forward
    def forced_bytes(self, stacks: tuple) -> bytes:
        """The bytes that must follow: the continuation while it is unique. Where the
        only choice is an optional separator space followed by a unique byte, the
        canonical form (json.dumps' ", " and ": "; no leading space) is taken, but a
        trailing space is left to the model so it can merge it with the next token."""
        got = self._forced.get(stacks)
        if got is not None:
            return got
        out = bytearray()
        cur = stacks
        pending_space = False
        while True:
            nexts = [b for b in range(256) if step_byte(cur, b)]
            if len(nexts) == 2 and nexts[0] == SPACE and not pending_space:
                after = step_byte(cur, SPACE)
                if [b for b in range(256) if step_byte(after, b)] == [nexts[1]]:
                    if _at_start(cur):  # '[' without the optional leading space
                        out.append(nexts[1])
                        cur = step_byte(cur, nexts[1])
                        continue
                    pending_space = True
                    cur = after
                    continue
                break
            if len(nexts) != 1:
                break
            if pending_space:
                out.append(SPACE)
                pending_space = False
            out.append(nexts[0])
            cur = step_byte(cur, nexts[0])
        return self._forced.put(stacks, bytes(out))


def _at_start(stacks: tuple) -> bool:
    return any(len(s) == 1 and isinstance(s[0][0], CallListNode) and s[0][1] == 0 for s in stacks)
