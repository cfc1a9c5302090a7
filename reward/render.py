"""A candidate step as a text reader sees it: a short (query, step) pair of plain text.

A cross-encoder reads the user's request beside a compact rendering of the step in
its context: the calls so far, the chosen tool's description, the parameter's
description and type, and the candidate's own text. Closing the list (``end``),
and ``[]`` above all, is judged against every tool, so those steps also list the
tools' names and one-line descriptions. Training (``train.encoder``) and scoring
(``reward.encoder``) both render through ``render`` so they read the same text.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from toolprm.engine.explore import query_text

#: Character budgets: the tokenizer truncates too, but a budget per part keeps a long
#: tool description from pushing the candidate itself out.
QUERY_CHARS, TOOL_CHARS, PARAM_CHARS, VALUE_CHARS, CALLS_CHARS, TOOLS_CHARS = 500, 160, 120, 160, 240, 400


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


def _first_line(text: str) -> str:
    return (str(text or "").strip().split("\n") or [""])[0]


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _calls(calls: list[dict]) -> str:
    return "; ".join(f"{c['name']}(" + ", ".join(f"{k}={_json(v)}" for k, v in c["arguments"].items()) + ")"
                     for c in calls) or "none"


def _type(spec: dict) -> str:
    t = spec.get("type")
    if isinstance(t, list):
        t = "|".join(map(str, t))
    if "enum" in spec:
        t = f"{t or 'value'} one of {_json(spec['enum'])}"
    return str(t or "any")


def _event(e: Any) -> tuple[str, int, str | None, Any]:
    """(kind, call, key, value) of a grammar ``StepEvent`` or its stored list form."""
    if isinstance(e, (list, tuple)):
        return e[0], e[1], e[2], e[3]
    return e.kind, e.call, e.key, e.value


def render(messages: Sequence[dict], tools: Sequence[dict], events: Sequence[Any]) -> tuple[str, str]:
    """(query text, step text) for the last of ``events``; ``tools`` are normalized
    bare specs (``Query.tools``)."""
    query = _cut(query_text(list(messages)), QUERY_CHARS)
    evs = [_event(e) for e in events]
    if not evs:
        return query, "start"
    by_name = {t["name"]: t for t in tools}
    calls: list[dict] = []
    for kind, _, key, value in evs[:-1]:
        if kind == "name":
            calls.append({"name": value, "arguments": {}})
        elif kind == "value" and calls:
            calls[-1]["arguments"][key] = value
    kind, _, key, value = evs[-1]
    so_far = _cut(_calls(calls), CALLS_CHARS)
    if kind == "end":
        listing = _cut("; ".join(f"{t['name']}: {_first_line(t.get('description'))}" for t in tools), TOOLS_CHARS)
        head = "answer: no call" if not value else f"answer: stop after {len(value)} call(s)"
        return query, f"{head} | calls: {so_far} | tools: {listing}"
    if kind == "name":
        tool = by_name.get(value, {})
        return query, (f"call {value}: {_cut(tool.get('description') or '', TOOL_CHARS)} | "
                       f"calls before: {so_far}")
    current = calls[-1] if calls else {"name": "", "arguments": {}}
    tool = by_name.get(current["name"], {})
    params = tool.get("parameters") or {}
    spec = (params.get("properties") or {}).get(key) or {}
    need = "required" if key in (params.get("required") or []) else "optional"
    where = (f"tool {current['name']}: {_cut(tool.get('description') or '', TOOL_CHARS)} | "
             f"parameter {key} ({_type(spec)}, {need}): {_cut(spec.get('description') or '', PARAM_CHARS)}")
    if kind == "key":
        return query, f"set {key} | {where} | calls: {so_far}"
    return query, f"{key} = {_cut(_json(value), VALUE_CHARS)} | {where} | calls: {so_far}"


__all__ = ["render"]
