"""Fixed texts: the byte Trie that matches a set of words (enum values, object keys,
tool names), the JSON spellings accepted for a fixed value, and LiteralNode."""
from __future__ import annotations

import json

from .nodes import DIGITS, DONE, REFEED, STAY, Node


class Trie:
    """A byte trie over a set of words; ``ids[i]`` is the item word ``i`` spells
    (several spellings may share an item). Node 0 is the root."""
    __slots__ = ("children", "terminal", "masks", "first")

    def __init__(self, words: list[bytes], ids: list[int] | None = None, masks: bool = True):
        ids = list(range(len(words))) if ids is None else ids
        self.children: list[dict[int, int]] = [{}]
        self.terminal: list[int] = [-1]   # item of the word ending here, or -1
        self.masks: list[int] = [0]       # bit i set: a word of item i lies below this node
        for w, i in zip(words, ids):
            t = 0
            bit = 1 << i if masks else 0
            self.masks[0] |= bit
            for b in w:
                nxt = self.children[t].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[t][b] = nxt
                    self.children.append({})
                    self.terminal.append(-1)
                    self.masks.append(0)
                t = nxt
                if masks:
                    self.masks[t] |= bit
            if self.terminal[t] < 0:
                self.terminal[t] = i
        self.first = [frozenset(c) for c in self.children]  # bytes that go on from a node


def spellings(value, container_spacing: bool = True, keep=None) -> list[bytes]:
    """The JSON texts accepted for a fixed value: compact and json.dumps' default
    separators, with and without ASCII escaping of non-ASCII characters. ``keep``
    (bytes -> bool) drops the unescaped spellings a vocabulary cannot write; the
    escaped ones are ASCII, which every vocabulary can."""
    out = []
    for ascii_ in (False, True):
        seps = [(",", ":"), (", ", ": ")] if container_spacing else [(",", ":")]
        for sep in seps:
            text = json.dumps(value, ensure_ascii=ascii_, separators=sep).encode()
            if ascii_ or text.isascii() or keep is None or keep(text):
                out.append(text)
    return list(dict.fromkeys(out))


def key_spellings(key: str, keep=None) -> list[bytes]:
    """A key's (or tool name's) JSON texts without the opening quote (see spellings)."""
    return [w[1:] for w in spellings(key, False, keep)]


def key_trie(keys: list[str], keep=None, masks: bool = True) -> Trie:
    """A Trie over the keys' (or tool names') spellings without the opening quote;
    item ``i`` is ``keys[i]``."""
    words, ids = [], []
    for i, k in enumerate(keys):
        for w in key_spellings(k, keep):
            words.append(w)
            ids.append(i)
    return Trie(words, ids, masks)


class LiteralNode(Node):
    """One of a fixed set of JSON values (enum, const, true/false, null), matched
    byte by byte on their JSON texts (see ``spellings``). Frame: (node, trie_node)."""
    __slots__ = ("trie",)

    def __init__(self, values: list, keep=None):
        words, ids = [], []
        for i, v in enumerate(values):
            for w in spellings(v, isinstance(v, (list, dict)), keep):
                words.append(w)
                ids.append(i)
        self.trie = Trie(words, ids, masks=False)

    def init(self):
        return [(self, 0)]

    def cands(self, frame):
        t = frame[1]
        return self.trie.first[t], self.trie.terminal[t] >= 0

    def step(self, frame, b):
        t = frame[1]
        trie = self.trie
        child = trie.children[t].get(b)
        if child is not None:
            # A number ends on the next byte, like a free number (see nodes' module doc).
            if trie.terminal[child] >= 0 and not trie.children[child] and b not in DIGITS:
                yield DONE, ()
            else:
                yield STAY, (self, child), ()
        if trie.terminal[t] >= 0:
            yield REFEED,
