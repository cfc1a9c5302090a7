"""Text features of a partial output against its query and tools.

The PRM reads (query, tools, partial output). Beside the backbone's hidden state
it gets a few cheap, explicit checks a small backbone is bad at:

* grounding: does the current value (and do the values so far) occur in the query
  (strings normalized the way BFCL normalizes them; numbers as written)? and, word
  by word, how much of the value are words of the query, and is it a phrase there?
* schema: is the current key required; does the value equal the parameter's
  default; are the required parameters of the calls closed so far all given?
* relevance: word overlap between the query and the chosen tool's description
  and parameters
  (and the best overlap over all tools, for deciding on ``[]``); how the chosen
  tool ranks against the others (its margin to the best one, whether it is the
  best), and how many tools there are to choose from.
* completeness of the current call (for deciding to close it or the list): the
  share of its optional parameters left unset, those of them the query mentions,
  and the numbers of the query that no value has used yet.

Everything is computed from the step events, the chat messages and the
normalized tool specs — the same at training time (from the stored data) and
in the search (from ``Candidate.events`` and the ``Query``).

``TEXT_FEATURES`` names them in order; a checkpoint records the names it was
trained on, and loading refuses a checkpoint whose names differ.
"""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

from toolprm.engine.explore import standardized

#: The text features, in the order ``text_features`` returns them.
TEXT_FEATURES = (
    "value_grounded", "values_grounded_mean", "values_grounded_min", "values_so_far", "key_required",
    "value_is_default", "string_length", "closed_calls_complete", "tool_similarity",
    "best_tool_similarity", "empty_list", "calls_so_far", "unknown_tool", "one_over_tools",
    "tool_margin", "tool_is_best", "second_tool_similarity", "unused_query_numbers",
    "optional_unset_share", "optional_count", "optional_unset_mentioned", "value_word_share",
    "value_is_phrase",
)
N_TEXT = len(TEXT_FEATURES)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an the of to in on for and or is are be by with from at as it this that you your "
                  "me my i we can could would please what which how get".split())


def _stem(w: str) -> str:
    # Crude suffix stripping so "weather"/"weathers", "book"/"booking" meet.
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(w) > 4 and w.endswith(suffix):
            return w[:-len(suffix)]
    return w


def _words(s: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(s.lower()) if w not in _STOP and len(w) > 1}


def query_text(messages: Sequence[dict]) -> str:
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return "\n".join(users or [m.get("content") or "" for m in messages])


def leaves(v: Any) -> list:
    """The scalar leaves of a JSON value (bools and None included), depth first."""
    if isinstance(v, dict):
        return [x for val in v.values() for x in leaves(val)]
    if isinstance(v, list):
        return [x for val in v for x in leaves(val)]
    return [v]


def grounded(value: Any, query: str, qnorm: str) -> float:
    """Share of the value's leaves that occur in the query (bools and None count half)."""
    found = leaves(value)
    if not found:
        return 0.5
    score = 0.0
    for x in found:
        if isinstance(x, bool) or x is None:
            score += 0.5
        elif isinstance(x, (int, float)):
            forms = {str(x)}
            if isinstance(x, float) and x.is_integer():
                forms.add(str(int(x)))
            score += 1.0 if any(re.search(r"(?<![\d.])" + re.escape(f) + r"(?![\d])", query) for f in forms) else 0.0
        else:
            n = standardized(str(x))
            score += 1.0 if n and n in qnorm else 0.0
    return score / len(found)


def _param_text(key: str, spec: Any) -> str:
    """A parameter's words for matching against the query: its name and description."""
    return key.replace("_", " ") + " " + str((spec or {}).get("description", ""))


def word_grounding(value: Any, query_words: list[str]) -> tuple[float, float]:
    """(share of the value's words that are words of the query, 1.0 if they occur
    there as one contiguous phrase): stricter than ``grounded``'s substring test,
    which finds "ca" in "jacket"."""
    words = [w for x in leaves(value) if isinstance(x, str) for w in _WORD.findall(x.lower())]
    if not words:
        return 0.0, 0.0
    have = set(query_words)
    share = sum(1 for w in words if w in have) / len(words)
    n = len(words)
    phrase = any(query_words[i:i + n] == words for i in range(len(query_words) - n + 1))
    return share, 1.0 if phrase else 0.0


class ToolIndex:
    """Per-query lookups over the normalized tool specs."""

    def __init__(self, messages: Sequence[dict], tools: Sequence[dict]):
        self.query = query_text(messages)
        self.qnorm = standardized(self.query)
        self.qwords = _words(self.query)
        self.qseq = _WORD.findall(self.query.lower())
        self.tools = {t["name"]: t for t in tools}
        self.sim = {name: self._sim(t) for name, t in self.tools.items()}
        ranked = sorted(self.sim.values(), reverse=True)
        self.max_sim = ranked[0] if ranked else 0.0
        self.second_sim = ranked[1] if len(ranked) > 1 else 0.0
        self.numbers = set(_NUMBER.findall(self.query))

    def _sim(self, tool: dict) -> float:
        # The tool's words: its name, description, and its parameters' names and descriptions.
        text = [tool.get("description", ""), tool["name"].replace("_", " ")]
        text += [_param_text(key, p) for key, p in (tool.get("parameters", {}).get("properties", {})
                                                    or {}).items()]
        words = _words(" ".join(text))
        if not words or not self.qwords:
            return 0.0
        return len(words & self.qwords) / len(self.qwords)

    def required(self, name: str) -> list[str]:
        t = self.tools.get(name)
        return list((t or {}).get("parameters", {}).get("required", []) or [])

    def prop(self, name: str, key: str) -> dict:
        t = self.tools.get(name) or {}
        return (t.get("parameters", {}).get("properties", {}) or {}).get(key, {}) or {}


def text_features(index: ToolIndex, events: Sequence[Any]) -> list[float]:
    """Features of the last event given all events so far (objects with kind, call,
    key, value; a name event's value is the function name)."""
    calls: list[tuple[str, dict]] = []
    values_grounded: list[float] = []
    for ev in events:
        if ev.kind == "name":
            calls.append((ev.value, {}))
        elif ev.kind == "value" and calls:
            calls[-1][1][ev.key] = ev.value
            values_grounded.append(grounded(ev.value, index.query, index.qnorm))
    last = events[-1] if events else None
    kind = last.kind if last is not None else "name"
    cur_name = calls[-1][0] if calls else None
    g_cur = values_grounded[-1] if kind == "value" and values_grounded else 0.0
    g_mean = sum(values_grounded) / len(values_grounded) if values_grounded else 1.0
    g_min = min(values_grounded) if values_grounded else 1.0
    key = last.key if last is not None and kind in ("key", "value") else None
    required = 1.0 if key and cur_name and key in index.required(cur_name) else 0.0
    is_default = 0.0
    str_len = 0.0
    if kind == "value" and cur_name:
        p = index.prop(cur_name, key)
        if "default" in p and p["default"] == last.value:
            is_default = 1.0
        if isinstance(last.value, str):
            str_len = min(len(last.value), 100) / 100
    # completeness of the calls closed so far (before a new name: the previous ones; at end: all)
    closed = calls[:-1] if kind == "name" else (calls if kind == "end" else calls[:-1])
    complete = 1.0
    for name, args in closed:
        req = index.required(name)
        if req:
            complete = min(complete, sum(1 for r in req if r in args) / len(req))
    sim_cur = index.sim.get(cur_name, 0.0) if cur_name else 0.0
    is_top = 1.0 if cur_name and sim_cur >= index.max_sim else 0.0
    empty = 1.0 if kind == "end" and not calls else 0.0
    unknown = 1.0 if cur_name is not None and cur_name not in index.tools else 0.0
    # the current call's optional parameters: how many, the share unset, those unset the query mentions
    opt_total = opt_unset = opt_mentioned = 0.0
    if cur_name in index.tools:
        props = index.tools[cur_name].get("parameters", {}).get("properties", {}) or {}
        required_keys = set(index.required(cur_name))
        unset = [k for k in props if k not in required_keys and k not in calls[-1][1]]
        n_opt = sum(1 for k in props if k not in required_keys)
        opt_total = min(n_opt, 6) / 6
        opt_unset = len(unset) / n_opt if n_opt else 0.0
        opt_mentioned = min(sum(1 for k in unset if _words(_param_text(k, props[k])) & index.qwords), 4) / 4
    used = json.dumps([v for _, args in calls for v in args.values()], default=str)
    unused_numbers = min(sum(1 for n in index.numbers if n not in used), 4) / 4
    w_share, w_phrase = word_grounding(last.value, index.qseq) if kind == "value" else (0.0, 0.0)
    named = {
        "value_grounded": g_cur, "values_grounded_mean": g_mean, "values_grounded_min": g_min,
        "values_so_far": min(len(values_grounded), 8) / 8, "key_required": required,
        "value_is_default": is_default, "string_length": str_len, "closed_calls_complete": complete,
        "tool_similarity": sim_cur, "best_tool_similarity": index.max_sim, "empty_list": empty,
        "calls_so_far": min(len(calls), 4) / 4, "unknown_tool": unknown,
        "one_over_tools": 1.0 / max(1, len(index.tools)), "tool_margin": sim_cur - index.max_sim,
        "tool_is_best": is_top, "second_tool_similarity": index.second_sim,
        "unused_query_numbers": unused_numbers, "optional_unset_share": opt_unset,
        "optional_count": opt_total, "optional_unset_mentioned": opt_mentioned,
        "value_word_share": w_share, "value_is_phrase": w_phrase,
    }
    return [named[k] for k in TEXT_FEATURES]


def events_from_records(steps: Sequence[dict]) -> list[Any]:
    """Light events (kind, call, key, value) from stored step records of one rollout."""
    from types import SimpleNamespace
    out = []
    for r in steps:
        value: Any = None
        if r["kind"] in ("name", "value"):
            try:
                value = json.loads(r["text"])
            except (ValueError, TypeError):
                value = r["text"]
        out.append(SimpleNamespace(kind=r["kind"], call=r["call"], key=r["key"], value=value))
    return out
