"""The compiled grammar of a tool set and its immutable decoding states."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolprm.errors import InvalidTokenError, ToolSchemaError

from .build import NodeBuilder
from .calls import CallListNode
from .containers import ArrayNode, ObjectNode
from .index import TokenIndex, _LRU, next_bytes
from .nodes import advance_stacks, step_byte
from .numbers import NumberNode
from .pattern_strings import PatternStringNode
from .strings import StringNode
from .normalize import CALL_MODES, Tool, call_list_schema, normalize_tools
from .vocab import Vocabulary

DEFAULT_MAX_CALLS = 16
# completion_bytes() tries bytes in this order: ones that close what is open first
# (',' ends a number before another digit could lengthen it), then the shortest
# values, then anything that keeps going (e.g. a string below its minLength).
_COMPLETION_PRIORITY = b'"]},0:ntf[{a' + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_MAX_COMPLETION = 1 << 14


#: The kinds of step boundary, in the order a call meets them.
STEP_KINDS = ("name", "key", "value", "end")


@dataclass(frozen=True)
class StepEvent:
    """A step boundary: a function name, a parameter key or a parameter value
    completed, or the call list closed (``end``).

    ``call`` is the index of the call in the list (for ``end``, the number of calls);
    ``key`` the parameter the key/value belongs to; ``text`` the raw JSON text of
    the name, key or value; ``value`` its parsed value (for ``end``, the whole call
    list); ``offset`` the character offset in the output where the step ends."""
    kind: str
    call: int
    key: str | None
    text: str
    value: Any
    offset: int


class Grammar:
    """The output language for one tool set, one vocabulary and one call-count mode."""

    def __init__(self, tools: list[Tool], vocab: Vocabulary, calls: str, max_calls: int):
        self.tools = tools
        self.vocab = vocab
        self.calls = calls
        self.max_calls = max_calls
        self.root = NodeBuilder(vocab.can_spell).call_list(tools, calls, max_calls)
        self.index = TokenIndex(vocab)
        self.schema = call_list_schema(tools, calls, max_calls)
        self._start = State(self, tuple(tuple([f]) for f in self.root.init()), b"")
        self._stable_forced = _LRU(1 << 14)
        self._next_steps = _LRU(1 << 12)
        self._short = _LRU(1 << 14)

    def stable_forced(self, stacks: tuple) -> tuple[int, ...]:
        """The forced tokens of a configuration, canonical and stable (cached): the
        tokenizer's own spelling of the unique continuation (``TokenIndex.forced_bytes``),
        cut before the first token that a grammar-valid continuation could merge
        into a longer vocabulary token. The cut-off bytes are left to the model,
        which writes them under the mask in its own tokens (so after a call it can
        choose ``},`` where forcing ``}}`` would hide that spelling)."""
        got = self._stable_forced.get(stacks)
        if got is None:
            data = self.index.forced_bytes(stacks)
            got = ()
            if data:
                ids = self.vocab.canonical(data)
                cut = self._first_merge(data, advance_stacks(stacks, data, 0)[0])
                end, keep = 0, []
                for t in ids:
                    end += len(self.vocab.token_bytes[t])
                    if end > cut:
                        break
                    keep.append(t)
                got = tuple(keep)
            self._stable_forced.put(stacks, got)
        return got

    def short_of_canonical(self, state: "State") -> tuple[tuple[int, int], ...]:
        """Tokens the grammar allows here but the tokenizer would not write, each
        with the one token the tokenizer writes instead (its own first token of
        every way on), at a discrete choice (``State.next_steps``; at a free-form
        value, the closing quote of a string counts as one):
        - a token shorter than the tokenizer's own first token of the alternatives
          it begins (``b`` or ``bl`` where the enum value ``black`` is one token,
          ``repo`` for the key ``repos``);
        - a token that spells a whole alternative, or runs on past it, where the
          tokenizer joins it to every way on (a bare ``"`` or ``"}`` where it writes
          ``",`` or ``"},``).
        A model that picks one writes the rest in a spelling it has hardly seen
        and spends more steps on it; the decoder gives its probability to the
        token the tokenizer writes instead. Where that is not one token (``[``
        begins both ``[]`` and ``[{"``), the token is left alone: which one the
        model meant is not known before its next step. Cached per configuration."""
        got = self._short.get(state.stacks)
        if got is None:
            vocab, mask = self.vocab, state.allowed_mask()
            alts = state.next_steps()
            short = self._short_prefixes(alts) if alts is not None else {}
            for alt in alts if alts is not None else [b'"']:  # free-form: the closing quote
                for tb in vocab.extensions(alt):
                    t = vocab.by_bytes[tb]
                    if mask[t] and t not in short:
                        instead = self._joined(state, tb)
                        if instead:
                            short[t] = instead
            got = self._short.put(state.stacks, tuple(
                (t, next(iter(ts))) for t, ts in sorted(short.items()) if len(ts) == 1 and mask[next(iter(ts))]))
        return got

    def _short_prefixes(self, alts: list[bytes]) -> dict[int, set[int]]:
        """Tokens that begin alternatives but are shorter than their canonical first
        tokens (and are not the canonical first token of another alternative), with
        those first tokens."""
        vocab, short, keep = self.vocab, {}, set()
        for alt in alts:
            first = vocab.canonical(alt)[0]
            for k in range(1, min(len(alt), vocab.max_len) + 1):
                t = vocab.by_bytes.get(alt[:k])
                if t is None:
                    continue
                if k < len(vocab.token_bytes[first]):
                    short.setdefault(t, set()).add(first)
                else:
                    keep.add(t)
        return {t: firsts for t, firsts in short.items() if t not in keep
                and not any(len(vocab.token_bytes[t]) > len(a) and vocab.token_bytes[t].startswith(a)
                            for a in alts)}

    def _joined(self, state: "State", tb: bytes) -> set[int]:
        """Where the tokenizer joins the token ``tb`` to every way on from it (the
        next few bytes, json.dumps-spaced), the longer tokens it writes instead;
        else the empty set."""
        after = advance_stacks(state.stacks, tb, 0)[0]
        ways = _ways(after, tb[-1:], _JOIN_LOOKAHEAD, _JOIN_LIMIT) if after else None
        if not ways:
            return set()
        firsts = {self.vocab.canonical(tb + w)[0] for w in ways}
        if any(len(self.vocab.token_bytes[f]) <= len(tb) for f in firsts):
            return set()
        return firsts

    def _first_merge(self, data: bytes, after: tuple) -> int:
        """The first byte offset ``q`` of ``data`` where a vocabulary token could begin
        and run on past its end into bytes the grammar allows next (so the tokenizer
        could merge across the boundary); ``len(data)`` if there is none."""
        vocab = self.vocab
        nexts = [bytes((b,)) for b in next_bytes(after)]
        for q in range(max(0, len(data) - vocab.max_len + 1), len(data)):
            tail = data[q:]
            for b in nexts:
                for token in vocab.extensions(tail + b):
                    rest = token[len(tail):]
                    if len(rest) == 1 or advance_stacks(after, rest, 0)[0]:
                        return q
        return len(data)

    def start(self) -> "State":
        return self._start

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)


class State:
    """An immutable decoding state; beams share and fork it freely."""
    __slots__ = ("grammar", "stacks", "raw", "events", "_ctx", "_mask")

    def __init__(self, grammar: Grammar, stacks: tuple, raw: bytes,
                 events: tuple = (), ctx: tuple = (-1, None, 0, 0)):
        self.grammar = grammar
        self.stacks = stacks
        self.raw = raw
        #: The StepEvents crossed so far, in order.
        self.events: tuple[StepEvent, ...] = events
        self._ctx = ctx  # (call index, current key, byte end of that key, characters in raw)
        self._mask = None

    @property
    def is_final(self) -> bool:
        """True when the text is a complete, valid call list (EOS is allowed then)."""
        return any(CallListNode.is_final(s) for s in self.stacks)

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", errors="replace")

    @property
    def chars(self) -> int:
        """Characters written so far: a step event's ``offset`` where one ended here."""
        return self._ctx[3]

    @property
    def calls_closed(self) -> int:
        """How many calls of the list are complete (their closing brace crossed)."""
        return self.stacks[0][0][2]  # the call list's frame, at the bottom of every stack

    def calls(self) -> list[dict]:
        """The calls begun so far, ``{"name", "arguments"}``, with the arguments completed."""
        calls: list[dict] = []
        for e in self.events:
            if e.kind == "name":
                calls.append({"name": e.value, "arguments": {}})
            elif e.kind == "value":
                calls[e.call]["arguments"][e.key] = e.value
        return calls

    def allowed_mask(self) -> np.ndarray:
        """Read-only bool array over the vocabulary: True where a token may come next."""
        if self._mask is None:
            self._mask = self.grammar.index.mask(self.stacks, self.is_final)
        return self._mask

    def non_canonical(self) -> tuple[tuple[int, int], ...]:
        """(token, the token the tokenizer writes instead) for the allowed tokens that
        are not the tokenizer's own spelling here (``Grammar.short_of_canonical``)."""
        return self.grammar.short_of_canonical(self)

    def allowed_token_ids(self) -> np.ndarray:
        return np.flatnonzero(self.allowed_mask())

    def advance(self, token_id: int) -> "State":
        """The state after ``token_id``; raises InvalidTokenError if it is forbidden."""
        vocab = self.grammar.vocab
        token_id = int(token_id)
        if not 0 <= token_id < vocab.size:
            raise InvalidTokenError(f"token id {token_id} is outside the vocabulary (size {vocab.size})")
        data = vocab.token_bytes[token_id]
        if not data:
            if token_id in vocab.eos_ids:
                if self.is_final:
                    return self
                raise InvalidTokenError(f"end of sequence (token {token_id}) before the call list "
                                        f"is complete; text so far: {self.text!r}")
            raise InvalidTokenError(f"token {token_id} is a special token, never allowed in a call list")
        stacks, ev = self.grammar.index.advance(self.stacks, token_id, data)
        if not stacks:
            raise InvalidTokenError(f"token {token_id} ({data!r}) is not allowed after {self.text!r}")
        return self._next(stacks, data, ev)

    def advance_bytes(self, data: bytes, what: str | None = None) -> "State":
        """The state after raw bytes (whatever tokens spell them)."""
        stacks, ev = advance_stacks(self.stacks, data, 0)
        if not stacks:
            raise InvalidTokenError(f"{what or repr(data)} is not allowed after {self.text!r}")
        return self._next(stacks, data, ev)

    def _next(self, stacks: tuple, data: bytes, ev: tuple) -> "State":
        raw = self.raw + data
        call, key, key_end, nchars = self._ctx
        if not ev:
            return State(self.grammar, stacks, raw, self.events,
                         (call, key, key_end, nchars + _chars(data)))
        events = list(self.events)
        base = len(self.raw)
        for kind, rel in ev:
            end = base + rel
            offset = nchars + _chars(data[:rel])
            if kind in ("name", "key"):
                text = raw[_string_start(raw, end):end].decode("utf-8")
                value = json.loads(text)
                if kind == "name":
                    call += 1
                else:
                    key, key_end = value, end
                events.append(StepEvent(kind, call, value if kind == "key" else None, text, value, offset))
            elif kind == "value":
                start = key_end + 1  # skip ':'
                if raw[start:start + 1] == b" ":
                    start += 1
                text = raw[start:end].decode("utf-8")
                events.append(StepEvent(kind, call, key, text, json.loads(text), offset))
            else:  # end
                text = raw[:end].decode("utf-8")
                events.append(StepEvent(kind, call + 1, None, "]", json.loads(text), offset))
        return State(self.grammar, stacks, raw, tuple(events),
                     (call, key, key_end, nchars + _chars(data)))

    def forced(self, canonical: bool = True) -> list[int]:
        """Token ids that must follow; empty when the model has a choice to make.

        ``canonical`` (the default): the tokenizer's own spelling of the unique
        continuation, without a trailing token that the next choice could merge
        into a longer one (``Grammar.stable_forced``). False: all of the unique
        continuation by longest match (the jump-forward of earlier versions, kept
        for comparison)."""
        if canonical:
            return list(self.grammar.stable_forced(self.stacks))
        return self.grammar.vocab.longest_match(self.forced_bytes())

    def forced_bytes(self) -> bytes:
        """The bytes that must follow, whatever the model does next (``forced()``
        spells a stable prefix of them as tokens)."""
        return self.grammar.index.forced_bytes(self.stacks)

    def next_steps(self, limit: int = 256, max_bytes: int = 160) -> list[bytes] | None:
        """The distinct byte continuations from here to the next step boundary, when
        every way there is a discrete choice: close the list or begin another call
        (with each tool name), each remaining key or close the arguments, each enum,
        boolean or null value. Spaced as json.dumps spaces (", ", ": "). None when
        the way passes through a free-form value (a string, number, array or nested
        object), or when there are more than ``limit`` ways. Cached per configuration."""
        key = (self.stacks, limit, max_bytes)
        cache = self.grammar._next_steps
        if key in cache:
            return cache.get(key)
        out: list[bytes] | None = []
        # Depth-first over bytes; a branch ends where an event fires.
        todo = [(self.stacks, b"", self.raw[-1:])]
        while todo and out is not None:
            stacks, acc, last = todo.pop()
            if _free_form(stacks) or len(acc) > max_bytes:
                out = None
                break
            for b in reversed(_spaced_bytes(stacks, last)):
                nxt, ev = advance_stacks(stacks, bytes((b,)), 0)
                if ev:
                    out.append(acc + bytes((b,)))
                    if len(out) > limit:
                        out = None
                        break
                elif nxt:
                    todo.append((nxt, acc + bytes((b,)), bytes((b,))))
        if out is not None:
            out.sort()
        cache.put(key, out)
        return out

    def completion_bytes(self) -> bytes:
        """A short byte string that takes this state to a complete call list (greedy:
        each byte is the first of _COMPLETION_PRIORITY that the automaton accepts),
        for closing an output within a token budget."""
        out = bytearray()
        cur = self.stacks
        while not any(CallListNode.is_final(s) for s in cur):
            for b in _COMPLETION_PRIORITY:
                nxt = step_byte(cur, b)
                if nxt:
                    out.append(b)
                    cur = nxt
                    break
            else:
                raise AssertionError(f"dead end in the grammar after {self.text!r}")
            if len(out) > _MAX_COMPLETION:
                raise AssertionError("no completion found within 16 KiB")
        return bytes(out)

    def completion_tokens(self, canonical: bool = True) -> list[int]:
        """completion_bytes() as token ids: the tokenizer's own spelling (or, with
        ``canonical=False``, longest match)."""
        vocab = self.grammar.vocab
        data = self.completion_bytes()
        return vocab.canonical(data) if canonical else vocab.longest_match(data)

    def __repr__(self) -> str:
        return f"State({self.text!r}, final={self.is_final})"


_WHITESPACE = frozenset(b" \t\n\r")


#: How far ``Grammar._joined`` looks past an alternative, and how many ways it reads.
_JOIN_LOOKAHEAD = 3
_JOIN_LIMIT = 256


def _spaced_bytes(stacks: tuple, last: bytes, ascii_only: bool = False) -> list[int]:
    """The bytes the grammar allows next, as json.dumps spaces: one space after ","
    and ":" (and only there), no other whitespace."""
    allowed = next_bytes(stacks)
    if last in (b",", b":") and 0x20 in allowed:
        return [0x20]
    return [b for b in allowed if b not in _WHITESPACE and (b < 0x80 or not ascii_only)]


def _ways(stacks: tuple, last: bytes, depth: int, limit: int) -> list[bytes] | None:
    """Every json.dumps-spaced byte string of ``depth`` bytes the grammar allows
    from ``stacks`` (shorter where the call list ends); None past ``limit`` ways."""
    out: list[bytes] = []
    todo = [(stacks, b"", last)]
    while todo:
        cur, acc, prev = todo.pop()
        nexts = _spaced_bytes(cur, prev, ascii_only=True) if len(acc) < depth else []
        if not nexts:
            if acc:
                out.append(acc)
                if len(out) > limit:
                    return None
            continue
        for b in nexts:
            nxt = step_byte(cur, b)
            if nxt:
                todo.append((nxt, acc + bytes((b,)), bytes((b,))))
    return out


def _free_form(stacks: tuple) -> bool:
    """Inside a value that is not a fixed literal: a string, a number, an array, or an
    object nested in the arguments (stack depth: list, call, arguments, value)."""
    for s in stacks:
        node = s[-1][0]
        if isinstance(node, (StringNode, PatternStringNode, NumberNode, ArrayNode)) or len(s) > 4 or (
                isinstance(node, ObjectNode) and len(s) > 3):
            return True
    return False


def _chars(data: bytes) -> int:
    """Characters that ``data`` completes or begins (UTF-8 continuation bytes excluded)."""
    return len(data) - sum(1 for b in data if 0x80 <= b < 0xC0)


def _string_start(raw: bytes, end: int) -> int:
    """Start of the JSON string literal that ends (closing quote included) at ``end``."""
    j = end - 2
    while j >= 0:
        if raw[j] == 0x22:
            k = j - 1
            while k >= 0 and raw[k] == 0x5C:
                k -= 1
            if (j - k - 1) % 2 == 0:
                return j
        j -= 1
    raise AssertionError("unterminated string in event decoding")


_CACHE = _LRU(64)
_CACHE_LOCK = threading.Lock()


def compile(tools, tokenizer, calls: str = "one_or_more", max_calls: int = DEFAULT_MAX_CALLS,
            lenient: bool = False) -> Grammar:
    """Compile tool signatures into a token-level grammar for ``tokenizer``.

    ``calls``: "one", "one_or_more" or "any" (zero or more; ``[]`` means no tool fits).
    ``lenient``: read a oneOf whose alternatives may overlap as anyOf (a value matching
    several alternatives is accepted, which JSON Schema rejects) instead of raising
    ToolSchemaError; off by default. A oneOf of provably disjoint alternatives is
    exact either way.
    Compiled grammars are cached per (tools, vocabulary, calls, max_calls)."""
    if calls not in CALL_MODES:
        raise ToolSchemaError(f"calls must be one of {sorted(CALL_MODES)}, got {calls!r}")
    if not isinstance(max_calls, int) or max_calls < 1:
        raise ToolSchemaError(f"max_calls must be a positive integer, got {max_calls!r}")
    norm = normalize_tools(tools, lenient)
    vocab = tokenizer if isinstance(tokenizer, Vocabulary) else Vocabulary.from_tokenizer(tokenizer)
    key = (json.dumps([t.spec() for t in norm], sort_keys=True), vocab.key, calls, max_calls)
    with _CACHE_LOCK:
        g = _CACHE.get(key)
        if g is None:
            g = _CACHE.put(key, Grammar(norm, vocab, calls, max_calls))
    return g
