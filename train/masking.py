"""Function masking (Hammer style): random function and parameter names.

A masked case gets every function name replaced by a random 5–15 character
identifier and every top-level parameter name by a random 4–10 character one
(alphabet ``[A-Za-z_.0-9]``, starting with a letter), consistently in the tools
(``name``, ``properties``, ``required``), the ground truth (function keys and
parameter keys) and the query (a function name quoted verbatim in a message is
renamed there too).  Descriptions, types, enums and values stay as they are, so
a PRM trained on masked cases must read the descriptions rather than memorize
names.  (Hammer also swaps defaults that equal the answer's value; not done
here.)
"""
from __future__ import annotations

import copy
import random
import re
import string

from toolprm.bfcl import Case

_FIRST = string.ascii_letters
_REST = string.ascii_letters + string.digits + "_."


def random_identifier(rng: random.Random, lo: int, hi: int, taken: set[str]) -> str:
    while True:
        n = rng.randint(lo, hi)
        name = rng.choice(_FIRST) + "".join(rng.choice(_REST) for _ in range(n - 1))
        if name not in taken and not name.endswith("."):
            taken.add(name)
            return name


def mask_case(case: Case, rng: random.Random) -> tuple[Case, dict]:
    """A masked copy of ``case`` and the renaming used:
    ``{"functions": {old: new}, "params": {old_function: {old: new}}}``."""
    taken: set[str] = set()
    fn_map: dict[str, str] = {}
    par_map: dict[str, dict[str, str]] = {}
    tools = copy.deepcopy(case.tools)
    for tool in tools:
        old = tool["name"]
        new = random_identifier(rng, 5, 15, taken)
        fn_map[old] = new
        tool["name"] = new
        params = tool.get("parameters") or {}
        props = params.get("properties") or {}
        pm: dict[str, str] = {}
        ptaken: set[str] = set()
        new_props = {}
        for key, spec in props.items():
            nk = random_identifier(rng, 4, 10, ptaken)
            pm[key] = nk
            new_props[nk] = spec
        if props:
            params["properties"] = new_props
        if isinstance(params.get("required"), list):
            params["required"] = [pm.get(k, k) for k in params["required"]]
        par_map[old] = pm
    truth = []
    for answer in case.ground_truth:
        (name, args), = answer.items()
        pm = par_map.get(name, {})
        truth.append({fn_map.get(name, name): {pm.get(k, k): copy.deepcopy(v) for k, v in args.items()}})
    values = [v for answer in case.ground_truth for args in answer.values() for v in _strings(args)]
    messages = copy.deepcopy(case.messages)
    for m in messages:
        if isinstance(m.get("content"), str):
            text = m["content"]
            for old in sorted(fn_map, key=len, reverse=True):
                if len(old) >= 4:
                    text = _rename(text, old, fn_map[old], [v for v in values if old in v])
            m["content"] = text
    return (Case(case.id, case.category, messages, tools, truth),
            {"functions": fn_map, "params": par_map})


def _rename(text: str, old: str, new: str, values: list[str]) -> str:
    """``old`` renamed ``new`` where it stands as a whole name in ``text``, except
    inside a span the answer copies as a value ("Remove the 'todo random' item",
    answered with content "todo random", keeps its words though a tool is named todo)."""
    kept = [(m.start(), m.end()) for v in values for m in re.finditer(re.escape(v), text)]

    def swap(m: re.Match) -> str:
        return m.group() if any(a <= m.start() and m.end() <= b for a, b in kept) else new
    return re.sub(r"(?<![\w.])" + re.escape(old) + r"(?![\w])", swap, text)


def _strings(v) -> list[str]:
    """The strings among a ground-truth value's leaves (lists of acceptable values, dicts)."""
    if isinstance(v, str):
        return [v] if v else []
    if isinstance(v, dict):
        return [x for val in v.values() for x in _strings(val)]
    if isinstance(v, list):
        return [x for val in v for x in _strings(val)]
    return []
