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
    messages = copy.deepcopy(case.messages)
    for m in messages:
        if isinstance(m.get("content"), str):
            text = m["content"]
            for old in sorted(fn_map, key=len, reverse=True):
                if len(old) >= 4:
                    text = re.sub(r"(?<![\w.])" + re.escape(old) + r"(?![\w])", fn_map[old], text)
            m["content"] = text
    return (Case(case.id, case.category, messages, tools, truth),
            {"functions": fn_map, "params": par_map})
