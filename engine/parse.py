"""Read calls out of text: leniently out of free text (the unconstrained baseline's
output), or strictly (a peer's constrained output must be exactly a call list)."""
from __future__ import annotations

import json
from typing import Any


def _as_calls(obj: Any, strict: bool = False) -> list[dict] | None:
    """``obj`` as ``[{"name", "arguments"}]``, or None. Lenient: one call object, a
    "parameters" key, arguments as a JSON string; ``strict``: a list of objects with
    exactly the keys "name" and "arguments", nothing else."""
    if isinstance(obj, dict) and not strict:
        obj = [obj]
    if not isinstance(obj, list):
        return None
    calls = []
    for c in obj:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            return None
        if strict and (set(c) != {"name", "arguments"} or not isinstance(c["arguments"], dict)):
            return None
        args = c.get("arguments", c.get("parameters", {}))
        if isinstance(args, str):  # some models emit arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append({"name": c["name"], "arguments": args})
    return calls


def parse_calls(text: str) -> list[dict] | None:
    """The call list in ``text``: the whole text as JSON, else the first JSON list or
    object found in it (e.g. inside a code fence). None if nothing parses as calls."""
    text = text.strip()
    try:
        return _as_calls(json.loads(text))
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{":
            try:
                obj, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            calls = _as_calls(obj)
            if calls is not None:
                return calls
    return None


def strict_calls(text: str) -> list[dict] | None:
    """The call list if ``text`` is exactly a JSON list of ``{"name", "arguments"}``
    objects, else None (a truncated output is invalid: nothing is salvaged)."""
    try:
        return _as_calls(json.loads(text), strict=True)
    except ValueError:
        return None
