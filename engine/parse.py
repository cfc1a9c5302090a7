"""Read calls out of free text (the unconstrained baseline's output)."""
from __future__ import annotations

import json
from typing import Any


def _as_calls(obj: Any) -> list[dict] | None:
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        return None
    calls = []
    for c in obj:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
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
