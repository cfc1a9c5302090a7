"""Candidates for one step of a search: by the grammar's structure, by sampling, and
from the query.

A small policy puts almost all its mass on one choice, so M samples rarely propose
the right alternative and no scorer can choose what it is never shown. At a step
where the grammar leaves a discrete choice (close the list or begin another call
with each tool name, each remaining key or close the arguments, each enum, boolean
or null value: ``State.next_steps``), every alternative is a candidate, each once,
with the policy's own log-probability (the likeliest ``top_k`` where there are
more). At a free-form value (a string, number or array), the candidates are ``m``
policy samples plus *grounded proposals*: spans and numbers of the query that fit
the parameter's type, fed through the grammar (so valid by construction), the
``proposals`` likeliest under the policy. Spans an earlier call already used for
the same parameter are left out, so a parallel answer's later call gets new ones.

``distinct_values`` (on by default): the parameters of one call rarely share a
text (1.9% of the gold calls of BFCL's live categories, mostly flags written as
strings), yet the search wrote one text into two parameters in 18 of 147 calls on
live queries, all wrong ("start": "Santa Barbara", "end": "Santa Barbara"). With
it, a value step's candidate (sampled, proposed or enumerated) that repeats
another parameter's string (``repeats_value``) gives way to a sibling that does
not. Chosen by a rule stated before its live run (results/live-distinct-48): 51
of 184 live cases right against 50 without (1 / 0 apart, McNemar p = 1).

``distinct_calls``: the decoder ends a list where a call repeats an earlier
one (same name and arguments: small models loop on their first call), so a
candidate that completes such a copy is in fact the list closed after the earlier
call, and it takes the slot a second, different call needed. BFCL's live answers
never hold one call twice (0 of the 40 multi-call answers). Traced on parallel_12,
both beams wrote the first call's value into the second call, so the search could
only answer one call. With it, such a candidate gives way to a sibling of the same
parent that completes a different call, as ``distinct_values`` does for values.
Off by default, by a rule stated before its live run (results/live-distinct-calls):
49 of 184 live cases right with it and without, every output the same; the search
ends live parallel queries after one call before the rule can act.

``close_values`` (off by default): a tokenizer joins a string's closing quote to
the comma after it (``",``), so a sampled value that ends in that token has also
chosen to write another key, and closing the arguments never competes with it.
With it, each such value is also offered closed: its bytes up to the quote, then
the likeliest way to close the arguments (``closings``), read in the tokenizer's
own spelling from where the value began. Seen in a traced live case
(live_simple_150-95-7), where the only key left was an optional one BFCL wants
left out. Left off by a rule stated before its live runs
(results/live-close-values): 71 right with it against 72 without, over SmolLM2's
184 and Qwen2.5-Coder-1.5B's 60 live cases.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from toolprm.errors import ToolprmError
from toolprm.grammar import InvalidTokenError, State

from .decode import Decoder

#: "structured": enumerate discrete choices and add grounded proposals; "sampling":
#: M policy samples per step only (earlier versions).
EXPLORATIONS = ("structured", "sampling")
_WORD = re.compile(r"[^\W_][\w'.\-/]*", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_QUOTED = re.compile(r"\"([^\"]{1,80})\"|'([^']{1,80})'|“([^”]{1,80})”")
_STOP = frozenset("a an the of to in on for and or is are be by with from at as it this that you your "
                  "me my i we can could would please what which how get find give show tell".split())


@dataclass(frozen=True)
class Exploration:
    """How a beam search proposes the candidates of a step (module docstring)."""
    mode: str = "structured"
    # Chosen on the live categories by `toolprm bench bounds` (results/bounds-live): of
    # 8/4, 4/2 and 16/8, 16/8 had the highest oracle ceiling at about the same cost.
    top_k: int = 16        # discrete alternatives kept per step, the likeliest under the policy
    proposals: int = 8     # grounded proposals kept per free-form value, the likeliest under the policy
    max_ngram: int = 3     # longest word span proposed for a string
    distinct_values: bool = True  # a value repeating another parameter's string gives way (docstring)
    close_values: bool = False    # a sampled value that commits to another key is also offered closed (docstring)
    distinct_calls: bool = False  # a candidate that repeats an earlier call gives way (docstring)

    def __post_init__(self):
        if self.mode not in EXPLORATIONS:
            raise ToolprmError(f"exploration must be one of {EXPLORATIONS}, got {self.mode!r}")
        for name in ("top_k", "max_ngram"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ToolprmError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.proposals, int) or self.proposals < 0:
            raise ToolprmError(f"proposals must be a non-negative integer, got {self.proposals!r}")
        for name in ("distinct_values", "close_values", "distinct_calls"):
            if not isinstance(getattr(self, name), bool):
                raise ToolprmError(f"{name} must be True or False, got {getattr(self, name)!r}")


def plan(dec: Decoder, row: int, m: int, ex: Exploration, query: str) -> tuple[int, list[list[int]], int]:
    """The candidates of row ``row``'s next step: (how many samples to draw, token
    continuations to add as chosen alternatives, how many of those to keep: the
    likeliest, once ``Decoder.extend`` has read their log-probs, by ``likeliest``)."""
    s = dec.rows[row]
    if s.done:
        return 1, [], 0
    if ex.mode == "sampling":
        return m, [], 0
    vocab = dec.grammar.vocab
    steps = s.state.next_steps()
    if steps is not None:
        conts = [t for t in (vocab.canonical(d) for d in steps) if dec.room_for(row, t)]
        if conts:
            return 0, conts, ex.top_k
        return m, [], 0  # near the budget: the loop's own closing takes over
    if not ex.proposals:
        return m, [], 0
    props = [t for t in (vocab.canonical(d) for d in grounded(s.state, query, ex.max_ngram))
             if dec.room_for(row, t)]
    return m, props, ex.proposals


def likeliest(dec: Decoder, added: list[int], parents: list[int], bounds: dict[int, int]) -> list[int]:
    """Of the rows ``added`` (chosen alternatives, of parents ``parents``), the
    ``bounds[parent]`` likeliest of each parent under the policy, in their order.
    Ranking the forks ``extend`` made reads their log-probs in the pass that feeds
    them, rather than in one more pass before."""
    by_parent: dict[int, list[int]] = {}
    for r, p in zip(added, parents):
        by_parent.setdefault(p, []).append(r)
    keep = set()
    for p, rows in by_parent.items():
        keep.update(sorted(rows, key=lambda r: -dec.rows[r].trace.step_logprob)[:bounds[p]])
    return [r for r in added if r in keep]


def at_free_value(state: State) -> bool:
    """Whether ``state`` stands after a key, at a free-form value (samples decide it)."""
    return bool(state.events) and state.events[-1].kind == "key" and state.next_steps() is None


def closings(parent: State, child: State) -> tuple[bytes, list[bytes]] | None:
    """Where ``child``, a candidate of ``parent``'s value step, ended its value with
    a token that also commits to another key (``",``): (the bytes from ``parent``
    to the value's end, each way to close the arguments from there: close the list,
    or begin another call with each tool). None where it did not."""
    new = child.events[len(parent.events):]
    if not new or new[0].kind != "value":
        return None
    end = len(child.text[:new[0].offset].encode())
    if not child.raw[end:].startswith(b","):
        return None
    value = child.raw[len(parent.raw):end]
    alts = parent.advance_bytes(value).next_steps()
    closes = [a for a in alts or [] if not a.startswith(b",")]
    return (value, closes) if closes else None


def standardized(s: str) -> str:
    """A string as BFCL's checker compares it (its standardize_string): without
    spaces and ,./-_*^, lower case, ' as "."""
    return re.sub(r"[ ,./\-_*^]", "", s).lower().replace("'", '"')


def _texts(value) -> set[str]:
    """The standardized strings of a value (itself, or a list's items), those of at
    least two characters."""
    items = value if isinstance(value, list) else [value]
    return {t for t in (standardized(v) for v in items if isinstance(v, str)) if len(t) >= 2}


def repeats_value(events, since: int) -> bool:
    """Whether a value completed at or after event ``since`` shares a string with
    another parameter of its call (``Exploration.distinct_values``)."""
    for ev in events[since:]:
        if ev.kind != "value":
            continue
        mine = _texts(ev.value)
        if mine and any(o.kind == "value" and o.call == ev.call and o.key != ev.key and mine & _texts(o.value)
                        for o in events):
            return True
    return False


def query_text(messages: list[dict]) -> str:
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return "\n".join(str(u) for u in (users or [m.get("content") or "" for m in messages]))


def grounded(state: State, query: str, max_ngram: int = 3, limit: int = 48) -> list[bytes]:
    """Byte continuations from ``state`` (which stands at a parameter's value) that
    write a value taken from ``query`` and fitting the parameter: numbers as written,
    quoted strings and word spans; for arrays, lists built from these (``_lists``).
    Each is checked by the grammar; at most ``limit``, in order of
    preference (quoted, then longer spans)."""
    ev = state.events[-1] if state.events else None
    if ev is None or ev.kind != "key":
        return []
    calls = state.calls()
    tool = state.grammar.tool(calls[-1]["name"]) if calls else None
    spec = ((tool.parameters if tool else {}).get("properties") or {}).get(ev.key) or {}
    types = _types(spec)
    used = {json.dumps(c["arguments"][ev.key], sort_keys=True) for c in calls[:-1]
            if c["name"] == calls[-1]["name"] and ev.key in c["arguments"]}
    values: list = []
    numbers = _NUMBER.findall(query)
    quoted = [a or b or c for a, b, c in _QUOTED.findall(query)]
    if types & {"integer", "number"}:
        for n in numbers:
            if "." not in n or "number" in types:
                values.append(float(n) if "." in n else int(n))
    spans = _spans(query, max_ngram) if types & {"string", "array"} else []
    if "string" in types:
        values += quoted + spans
    if "array" in types:
        values += _lists(_types(spec.get("items") or {}), numbers, quoted, spans)
    # The ":" after the key may still be held back for the model (canonical forcing);
    # spaced as json.dumps spaces.
    glue = b" " if state.raw.endswith(b":") else b"" if state.raw.endswith(b": ") else b": "
    out, seen = [], set()
    for v in values:
        key = json.dumps(v, sort_keys=True)
        if key in seen or key in used:
            continue
        seen.add(key)
        data = glue + json.dumps(v, ensure_ascii=False).encode()
        try:
            state.advance_bytes(data)
        except InvalidTokenError:
            continue
        out.append(data)
        if len(out) >= limit:
            break
    return out


def _lists(item: set[str], numbers: list[str], quoted: list[str], spans: list[str],
           pairs: int = 6, singles: int = 12) -> list[list]:
    """Arrays built from the query: all its numbers, each two numbers in a row (a
    range: "from 2015 to 2021"); for strings, all quoted ones, and one-item lists of
    a quoted string or a short span. A "number" array's numbers are written as floats
    (1.0): an integer is a valid JSON number, but BFCL's checker wants floats inside
    an array of floats."""
    out: list[list] = []
    if item & {"integer", "number"}:
        nums = ([int(n) for n in numbers if "." not in n] if "integer" in item
                else [float(n) for n in numbers])
        if len(nums) > 1:
            out.append(nums)
        out += [nums[i:i + 2] for i in range(min(pairs, len(nums) - 1))]
    if "string" in item:
        if len(quoted) > 1:
            out.append(quoted)
        short = [t for t in spans if len(_WORD.findall(t)) <= 2]
        out += [[t] for t in (quoted + short[::-1])[:singles]]
    return out


def _types(spec: dict) -> set[str]:
    t = spec.get("type")
    types = set(t) if isinstance(t, list) else {t} if isinstance(t, str) else set()
    for alt in (spec.get("anyOf") or []) + (spec.get("oneOf") or []):
        types |= _types(alt)
    if "enum" in spec or "const" in spec:
        return set()  # a discrete value: enumerated, not proposed
    return types


def _spans(query: str, max_ngram: int) -> list[str]:
    """Word spans of the query (up to ``max_ngram`` words, with the text between them
    as written), longer first; none that begins or ends with a stop word."""
    words = [(m.start(), m.end(), m.group().lower().strip(".")) for m in _WORD.finditer(query)]
    spans = []
    for n in range(max_ngram, 0, -1):
        for i in range(len(words) - n + 1):
            a, b = words[i], words[i + n - 1]
            if a[2] in _STOP or b[2] in _STOP:
                continue
            text = query[a[0]:b[1]].rstrip(".,;:!?")
            if "\n" not in text:
                spans.append(text)
    return spans
