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

import json
from bisect import bisect_left
from collections import OrderedDict

import numpy as np

from .calls import CallListNode, CallListPhase
from .nodes import QUOTE, SPACE, advance_stacks, stack_cands, step_byte
from .pattern_strings import PatternStringNode
from .strings import S_CLEAN, StringNode, StringPhase
from .vocab import Vocabulary


_FRESH_KEY = object()  # stands for a free key not used before, when checking what follows it


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


def _cands(stacks: tuple):
    out: frozenset | None = frozenset()
    for s in stacks:
        c = stack_cands(s)
        if c is None:
            return None
        out |= c
    return out


def _frozen(m: np.ndarray) -> np.ndarray:
    m.flags.writeable = False
    return m


class TokenIndex:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self._ids = _LRU(65536)      # one stack -> sorted allowed token ids (walk path)
        self._dense = _LRU(256)      # configurations -> dense mask (kept few: memory stays hot)
        self._strings = _LRU(4096)   # (continuation, esc, budget, min_left) -> dense mask
        self._tails = _LRU(4096)     # configuration where a string closed -> {tail: allowed}
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
        if isinstance(node, StringNode) and top[1] == StringPhase.INSIDE:
            return self._string_mask(stack)
        key = (stack,)
        if isinstance(node, PatternStringNode):  # masks shared across string lengths
            key = (stack[:-1] + (node.mask_frame(top, self.vocab.max_len),),)
        ids = self._ids.get(key)
        if ids is None:
            ids = self._ids.put(key, self._walk((stack,)))
        m = np.zeros(self.vocab.size, dtype=bool)
        m[ids] = True
        return _frozen(m)

    def _stay_mask(self, esc: int, budget: int) -> np.ndarray:
        key = (esc, budget)
        m = self._stays.get(key)
        if m is None:
            stay_n = self.vocab.string_tables(esc).stay_n
            m = self._stays.put(key, _frozen((stay_n >= 0) & (stay_n <= budget)))
        return m

    def _string_mask(self, stack: tuple) -> np.ndarray:
        top = stack[-1]
        node, esc = top[0], top[3]
        facts = self.vocab.string_tables(esc)
        # Budgets past the longest token all allow the same tokens: share their masks.
        budget = min(node.max - top[2], facts.cap)
        min_left = min(max(0, node.min - top[2]), facts.cap + 1)
        free = type(node) is not StringNode
        key = (stack[:-1], node, esc, budget, min_left)
        m = None if free else self._strings.get(key)
        if m is not None:
            return m
        m = self._stay_mask(esc, budget).copy()
        sel = self._exits_ok(stack, facts, budget, min_left)
        m[facts.exit_ids[sel]] = True
        if free:
            tb = self.vocab.token_bytes
            self._free_key_exact(stack, m, facts, sel, lambda e: tb[e])
            return _frozen(m)
        return self._strings.put(key, _frozen(m))

    def _exits_ok(self, stack: tuple, facts, budget: int, min_left: int) -> np.ndarray:
        """Which of the string-closing tokens in ``facts`` are allowed: their length
        fits, and their tail is accepted where the string closes (for a free key:
        where a key not taken yet closes; see _free_key_exact)."""
        n = facts.exit_n
        sel = (n <= budget) & (n >= min_left)
        if not sel.any():
            return sel
        node = stack[-1][0]
        if type(node) is StringNode:
            closed = step_byte((stack[:-1] + ((node, StringPhase.INSIDE, node.min, S_CLEAN),),), QUOTE)
        else:
            parent = stack[-2]
            closed = (stack[:-2] + (parent[0].child_done(parent, _FRESH_KEY)[0],),)
        memo = self._tails.get(closed)
        if memo is None:
            memo = self._tails.put(closed, {b"": True})
            first = _cands(closed)
        else:
            first = None
        tails = facts.exit_tail
        for i in np.flatnonzero(sel).tolist():
            t = tails[i]
            ok = memo.get(t)
            if ok is None:
                if first is None:
                    first = _cands(closed)
                ok = (first is None or t[0] in first) and bool(advance_stacks(closed, t, 0)[0])
                memo[t] = ok
            if not ok:
                sel[i] = False
        return sel

    def _free_key_exact(self, stack: tuple, ok: np.ndarray, facts, sel: np.ndarray, data) -> None:
        """Correct ``ok`` (entries of ``facts``, from the tables) for a free key, whose
        allowed tokens also depend on its text: closing tokens that would complete a
        taken key are removed; closing tokens are checked exactly while an escape is
        pending and when their tail holds two more quotes; so are, when a taken key
        is as long as the cap, the tokens that would fill the key to the cap.
        ``data(e)``: the bytes entry e feeds."""
        node, _, count, esc, text, used = stack[-1]
        taken = [k for k in node.declared | used if isinstance(k, str)]
        left = node.max - count
        exits = np.flatnonzero(facts.exit_n <= left)
        if esc != S_CLEAN:
            exact = set(facts.exit_ids[exits].tolist())
        else:
            so_far = json.loads(b'"' + text + b'"')
            for k in taken:
                if k.startswith(so_far):
                    for i in facts.exit_keys.get(k[len(so_far):], ()):
                        ok[facts.exit_ids[i]] = False
            # A tail reaches the next free key's end only through two more quotes.
            exact = {int(facts.exit_ids[i]) for i in exits.tolist()
                     if sel[i] and facts.exit_tail[i].count(b'"') >= 2}
        if left <= facts.cap and any(len(k) == node.max for k in taken):
            exact.update(np.flatnonzero((facts.stay_n == left) & (facts.stay_esc == S_CLEAN)).tolist())
        for e in exact:
            ok[e] = bool(advance_stacks((stack,), data(e), 0)[0])

    def _string_subtree(self, lo: int, hi: int, depth: int, stack: tuple) -> np.ndarray:
        """Sorted positions in lo..hi-1 (tokens sharing ``depth`` bytes that brought
        the automaton inside a free string) allowed from there on."""
        top = stack[-1]
        node, esc = top[0], top[3]
        facts = self.vocab.suffix_string_tables(lo, hi, depth, esc)
        budget = min(node.max - top[2], facts.cap)
        min_left = min(max(0, node.min - top[2]), facts.cap + 1)
        ok = (facts.stay_n >= 0) & (facts.stay_n <= budget)
        sel = self._exits_ok(stack, facts, budget, min_left)
        ok[facts.exit_ids[sel]] = True
        if type(node) is not StringNode:
            vb = self.vocab.sorted_bytes
            self._free_key_exact(stack, ok, facts, sel, lambda e: vb[lo + e][depth:])
        return np.flatnonzero(ok) + lo

    def _walk(self, stacks: tuple) -> np.ndarray:
        """Allowed token ids, by a depth-first walk of the sorted vocabulary that
        only descends into byte prefixes the automaton accepts (and only tries the
        bytes the nodes name as candidates). Where a prefix enters a free string,
        the rest of its subtree comes from per-token tables instead."""
        vb = self.vocab.sorted_bytes
        found: list[int] = []
        parts: list[np.ndarray] = []

        def walk(lo: int, hi: int, depth: int, cur: tuple) -> None:
            i = lo
            while i < hi and len(vb[i]) == depth:
                found.append(i)
                i += 1
            if i >= hi:
                return
            if len(cur) == 1:
                top = cur[0][-1]
                if isinstance(top[0], StringNode) and top[1] == StringPhase.INSIDE:
                    parts.append(self._string_subtree(i, hi, depth, cur[0]))
                    return
            cands = _cands(cur)
            if cands is None:
                while i < hi:
                    b = vb[i][depth]
                    j = bisect_left(vb, vb[i][:depth] + bytes((b + 1,)), i, hi) if b < 255 else hi
                    nxt = step_byte(cur, b)
                    if nxt:
                        walk(i, j, depth + 1, nxt)
                    i = j
                return
            prefix = vb[i][:depth]
            for b in sorted(cands):
                start = bisect_left(vb, prefix + bytes((b,)), i, hi)
                if start >= hi or vb[start][depth] != b:
                    continue
                j = bisect_left(vb, prefix + bytes((b + 1,)), start, hi) if b < 255 else hi
                nxt = step_byte(cur, b)
                if nxt:
                    walk(start, j, depth + 1, nxt)
                i = j

        walk(0, len(vb), 0, stacks)
        pos = np.concatenate([np.array(found, dtype=np.int64)] + parts) if parts else \
            np.array(found, dtype=np.int64)
        return np.sort(self.vocab.sorted_ids_array[pos])

    # ------------------------------------------------------------------ advancing
    def advance(self, stacks: tuple, token_id: int, data: bytes) -> tuple[tuple, tuple]:
        """Configurations after the token's bytes (empty if it is not allowed) and
        its events, with positions relative to the token's start."""
        if len(stacks) == 1:
            stack = stacks[0]
            top = stack[-1]
            node = top[0]
            if type(node) is StringNode and top[1] == StringPhase.INSIDE:
                stay_n, stay_esc = self.vocab.string_tables(top[3])[:2]
                n = stay_n[token_id]
                if n >= 0:
                    count = top[2] + int(n)
                    if count > node.max:
                        return (), ()
                    return (stack[:-1] + ((node, StringPhase.INSIDE, count, int(stay_esc[token_id])),),), ()
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
            nexts = next_bytes(cur, 3)
            if len(nexts) == 2 and nexts[0] == SPACE and not pending_space:
                after = step_byte(cur, SPACE)
                if next_bytes(after, 2) == [nexts[1]]:
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


_BYTE_ORDER = sorted(range(256), key=lambda b: b < 0x20)  # printable first: found sooner


def next_bytes(stacks: tuple, limit: int = 256) -> list[int]:
    """``limit`` bytes that ``stacks`` accepts (all of them if fewer), in byte order
    except that control bytes come last."""
    cands = _cands(stacks)
    out = []
    for b in (_BYTE_ORDER if cands is None else sorted(cands)):
        if step_byte(stacks, b):
            out.append(b)
            if len(out) == limit:
                break
    return out


def _at_start(stacks: tuple) -> bool:
    return any(len(s) == 1 and isinstance(s[0][0], CallListNode) and s[0][1] == CallListPhase.START
               for s in stacks)
