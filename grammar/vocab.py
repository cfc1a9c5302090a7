"""A tokenizer's vocabulary as raw bytes, which is what the automaton reads.

Supports byte-level BPE (GPT-2, SmolLM2, Qwen: tokens spelled with the
bytes-to-unicode alphabet) and SentencePiece-style vocabularies ('▁' for space,
``<0xAB>`` byte-fallback tokens: Llama, Gemma). Special tokens get no bytes: the
grammar never allows them, except EOS exactly when the output is complete.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import re
import weakref
from functools import lru_cache
from typing import Callable, Iterator, NamedTuple

import numpy as np

from toolprm.errors import ToolprmError

from .nodes import QUOTE
from .strings import S_CLEAN, STRING_TABLE

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _decoder_kind(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        spec = json.dumps(json.loads(backend.to_str()).get("decoder"))
        if '"ByteLevel"' in spec:
            return "bytelevel"
        if "ByteFallback" in spec or "Metaspace" in spec or "\u2581" in spec or "\\u2581" in spec:
            return "sentencepiece"
    vocab = tokenizer.get_vocab()
    if any("\u2581" in t for t in list(vocab)[:5000]):
        return "sentencepiece"
    return "bytelevel"


def _complete_utf8(t: bytes) -> bool:
    try:
        t.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class Vocabulary:
    """Token id -> bytes (None for special tokens), plus lookup tables built once."""

    def __init__(self, token_bytes: list[bytes | None], eos_ids: list[int],
                 encode: Callable[[str], list[int]] | None = None):
        """``encode``: the tokenizer's own text -> ids (its merges), for ``canonical``;
        None: longest match stands in for it."""
        self._encode = encode
        self.token_bytes = token_bytes
        self.size = len(token_bytes)
        self.eos_ids = sorted(set(i for i in eos_ids if 0 <= i < self.size))
        h = hashlib.sha256()
        for t in token_bytes:
            h.update(b"\x00" if t is None else b"\x01" + len(t).to_bytes(4, "little") + t)
        h.update(json.dumps(self.eos_ids).encode())
        self.key = h.hexdigest()
        pairs = sorted((t, i) for i, t in enumerate(token_bytes) if t)
        singles = {t for t, _ in pairs if len(t) == 1}
        if not all(bytes((b,)) in singles for b in range(0x80, 0xC0)):
            # Without every continuation byte as a token, a token that ends inside a
            # UTF-8 character might never be completed: drop such tokens.
            token_bytes = [t if t is None or _complete_utf8(t) else None for t in token_bytes]
            self.token_bytes = token_bytes
            pairs = sorted((t, i) for i, t in enumerate(token_bytes) if t)
        self.sorted_bytes = [t for t, _ in pairs]
        self.sorted_ids_array = np.array([i for _, i in pairs], dtype=np.int64)
        self.max_len = max(map(len, self.sorted_bytes), default=1)
        self.by_bytes: dict[bytes, int] = {}
        for t, i in pairs:
            self.by_bytes.setdefault(t, i)
        missing = [chr(b) for b in range(0x20, 0x7F) if bytes((b,)) not in self.by_bytes]
        if missing:
            raise ToolprmError("this vocabulary cannot spell every printable ASCII character "
                               f"(missing {''.join(missing)!r}); constrained decoding could dead-end")
        self._string_tables: dict = {}
        self._spellable: dict[str, bool] = {}
        self._suffix_tables: dict = {}

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "Vocabulary":
        """The vocabulary of a Hugging Face tokenizer (cached per tokenizer object)."""
        try:
            cached = _BY_TOKENIZER.get(tokenizer)
        except TypeError:
            cached = None
        if cached is not None:
            return cached
        kind = _decoder_kind(tokenizer)
        size = len(tokenizer)
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for i, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
            if getattr(tok, "special", False):
                special.add(i)
        u2b = _unicode_to_byte()
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        out: list[bytes | None] = []
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                out.append(None)
            elif kind == "sentencepiece":
                m = _BYTE_FALLBACK.match(piece)
                out.append(bytes((int(m.group(1), 16),)) if m else piece.replace("\u2581", " ").encode())
            elif all(c in u2b for c in piece):
                out.append(bytes(u2b[c] for c in piece))
            else:  # an added, non-special token spelled in plain text
                out.append(piece.encode())
        eos = tokenizer.eos_token_id
        vocab = cls(out, [eos] if eos is not None else [], _encoder(tokenizer))
        try:
            _BY_TOKENIZER[tokenizer] = vocab
        except TypeError:
            pass
        return vocab

    def can_spell(self, data: bytes) -> bool:
        """Can tokens write ``data``, whichever token boundaries a walk takes inside it?
        True when each character can be written on its own (continuation bytes are
        single tokens, so a token may stop inside a character)."""
        memo = self._spellable
        for ch in data.decode("utf-8"):
            ok = memo.get(ch)
            if ok is None:
                b = ch.encode()
                ok = memo[ch] = any(self._segments(b, i) for i in range(1, len(b) + 1))
            if not ok:
                return False
        return True

    def _segments(self, b: bytes, i: int) -> bool:
        """Can b be split into tokens, the first being b[:i]?"""
        if b[:i] not in self.by_bytes:
            return False
        rest = b[i:]
        return not rest or any(self._segments(rest, j) for j in range(1, len(rest) + 1))

    def longest_match(self, data: bytes) -> list[int]:
        """Tokenize ``data`` greedily, longest token first (for text the grammar
        dictates, where the model's own tokenization is not available)."""
        out, i = [], 0
        while i < len(data):
            for j in range(min(len(data), i + self.max_len), i, -1):
                tid = self.by_bytes.get(data[i:j])
                if tid is not None:
                    out.append(tid)
                    i = j
                    break
            else:
                raise ToolprmError(f"the vocabulary cannot spell byte {data[i]:#x}")
        return out

    def canonical(self, data: bytes) -> list[int]:
        """``data`` spelled as the tokenizer itself spells it (its own merges: for BPE
        that is not longest match), where that spelling has exactly these bytes (a
        SentencePiece tokenizer may add a leading space, and a cut inside a UTF-8
        character has no spelling); otherwise longest match."""
        if self._encode is not None:
            try:
                ids = self._encode(data.decode("utf-8"))
            except (UnicodeDecodeError, ReferenceError):
                ids = None
            if ids and all(0 <= i < self.size and self.token_bytes[i] for i in ids) \
                    and b"".join(self.token_bytes[i] for i in ids) == data:
                return list(ids)
        return self.longest_match(data)

    def extensions(self, prefix: bytes) -> Iterator[bytes]:
        """The tokens (as bytes) that begin with ``prefix``, itself included."""
        i = bisect.bisect_left(self.sorted_bytes, prefix)
        while i < len(self.sorted_bytes) and self.sorted_bytes[i].startswith(prefix):
            yield self.sorted_bytes[i]
            i += 1

    def string_tables(self, esc: int = 0):
        """Per-token facts for the inside-a-free-string fast path, computed once per
        starting escape state ``esc``.

        Starting inside a string in state ``esc``, a token either stays inside
        (``stay_n[t]`` = code points it begins, else -1; ``stay_esc[t]`` the state it
        ends in), or closes the string after ``exit_n`` code points with the rest
        ``exit_tail`` left for the structure (``exit_ids``: those tokens).
        ``cap``: budgets at or above it allow the same tokens as an unlimited one."""
        got = self._string_tables.get(esc)
        if got is None:
            got = _string_facts(self.token_bytes, 0, esc)
            self._string_tables[esc] = got
        return got

    def suffix_string_tables(self, lo: int, hi: int, depth: int, esc: int):
        """``string_tables`` for the tokens at sorted positions lo..hi-1 (which share
        their first ``depth`` bytes), read from byte ``depth`` on; ids are positions
        relative to ``lo``."""
        key = (lo, depth, esc)
        got = self._suffix_tables.get(key)
        if got is None:
            got = _string_facts(self.sorted_bytes[lo:hi], depth, esc)
            self._suffix_tables[key] = got
        return got


def _string_facts(tokens: list, start: int, esc0: int):
    n_tok = len(tokens)
    stay_n = np.full(n_tok, -1, dtype=np.int32)
    stay_esc = np.zeros(n_tok, dtype=np.int8)
    exit_ids, exit_n, exit_tail = [], [], []
    for i, t in enumerate(tokens):
        if not t:
            continue
        state, n = esc0, 0
        for j in range(start, len(t)):
            b = t[j]
            if state == S_CLEAN:
                if b == QUOTE:
                    exit_ids.append(i)
                    exit_n.append(n)
                    exit_tail.append(t[j + 1:])
                    break
                n += 1
            state = STRING_TABLE[state][b]
            if state < 0:
                break
        else:
            stay_n[i] = n
            stay_esc[i] = state
    stay_n.flags.writeable = False
    stay_esc.flags.writeable = False
    cap = max(int(stay_n.max(initial=0)), max(exit_n, default=0))
    exit_keys: dict[str, list[int]] = {}  # what a closing token adds to the string: exits
    if esc0 == S_CLEAN:
        for k, (i, tail) in enumerate(zip(exit_ids, exit_tail)):
            t = tokens[i]
            exit_keys.setdefault(json.loads(b'"' + t[start:len(t) - len(tail) - 1] + b'"'), []).append(k)
    return StringFacts(stay_n, stay_esc, np.array(exit_ids, dtype=np.int64),
                       np.array(exit_n, dtype=np.int32), exit_tail, cap, exit_keys)


class StringFacts(NamedTuple):
    stay_n: np.ndarray
    stay_esc: np.ndarray
    exit_ids: np.ndarray
    exit_n: np.ndarray
    exit_tail: list
    cap: int
    exit_keys: dict


_BY_TOKENIZER: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _encoder(tokenizer) -> Callable[[str], list[int]] | None:
    """The tokenizer's own encoding, held weakly (the vocabulary is cached per
    tokenizer and must not keep it alive)."""
    if not callable(getattr(tokenizer, "encode", None)):
        return None
    ref = weakref.ref(tokenizer)

    def encode(text: str) -> list[int]:
        tok = ref()
        if tok is None:
            raise ReferenceError("the tokenizer is gone")
        return tok.encode(text, add_special_tokens=False)
    return encode
