"""BFCL v4 data: categories, cases, their possible answers, and the train/test split guard.

The data come from the PyPI package ``bfcl-eval`` (installed with ``--no-deps``).
Train / test split (see DESIGN.md): the non-live categories are the test set and
must never be trained or tuned on; :func:`assert_not_test` guards training code.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.resources
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from toolprm.errors import ToolprmError

from .literals import literal

#: Non-live BFCL categories: the test set. Never train or tune on them.
TEST_CATEGORIES: tuple[str, ...] = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
)
#: Live BFCL categories: usable for PRM training and tuning.
TRAIN_CATEGORIES: tuple[str, ...] = (
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
)
CATEGORIES: tuple[str, ...] = TEST_CATEGORIES + TRAIN_CATEGORIES
#: Non-live BFCL categories in Java and JavaScript: test set too, and part of BFCL's
#: Non-Live AST summary (``bfcl.summary``), but kept out of TEST_CATEGORIES, which
#: is the default run of ``bench bfcl`` and ``bench scaling``: ask for them by name.
LANGUAGE_CATEGORIES: tuple[str, ...] = ("simple_java", "simple_javascript")
#: Other cases in BFCL's form, held out and never trained on: NESTFUL's (``bfcl.nestful``)
#: and the coordinated multi-call queries built from held-out live ones
#: (``bfcl.synthetic``). The checker reads them as BFCL's parallel_multiple.
OTHER_CATEGORIES: tuple[str, ...] = ("nestful", "coordinated")
#: Categories without possible answers: a case passes iff no call is made.
IRRELEVANCE_CATEGORIES: tuple[str, ...] = ("irrelevance", "live_irrelevance")

#: Cases that no correct output can pass under BFCL's checker: their answer keys are
#: defective (found by scoring ground_truth_calls on every case; see the tests).
#: Training code should skip them; of the test categories only simple_java has any,
#: so BFCL's own ground truth scores 97/100 there.
KNOWN_UNSATISFIABLE: frozenset[str] = frozenset(
    {
        # an ArrayList of "any": BFCL parses every element to a string, but the
        # answer holds 42 / true among them
        "simple_java_36",
        "simple_java_65",
        # the HashMap answer gives "epoch_millis" where its list of alternatives
        # belongs, so the checker accepts one of its characters ("e") and not the value
        "simple_java_64",
        # a required array parameter lists no acceptable value at all ([] not [[]])
        "live_simple_106-63-0",
        "live_simple_112-68-0",
        # the answer gives Trains_1_FindTrains "journey_start_time", which its schema lacks
        "live_multiple_862-181-3",
        # the answer names the parameter "question"; the schema requires "statement"
        "live_multiple_964-207-0",
    }
)

# Every non-live single-turn BFCL category (v4 names and the v3 name "simple"):
# the guard refuses them all, not only the ones this harness loads.
_NON_LIVE_CATEGORIES: tuple[str, ...] = TEST_CATEGORIES + LANGUAGE_CATEGORIES + ("simple",)
# What load_cases and check accept.
_LOADABLE: tuple[str, ...] = CATEGORIES + LANGUAGE_CATEGORIES + OTHER_CATEGORIES
# A BFCL id is "<category>_<index>" (live ids: "<category>_<index>-<a>-<b>");
# longest names first so "parallel_multiple_3" is not read as "parallel".
_NON_LIVE_ID = re.compile(
    r"^(%s)_\d"
    % "|".join(re.escape(c) for c in sorted(_NON_LIVE_CATEGORIES, key=len, reverse=True))
)
_ANY_ID = re.compile(
    r"^(%s)_\d"
    % "|".join(
        re.escape(c)
        for c in sorted(_NON_LIVE_CATEGORIES + TRAIN_CATEGORIES, key=len, reverse=True)
    )
)

_VERSION_PREFIX = "BFCL_v4"


@dataclass
class Case:
    """One single-turn BFCL question.

    ``tools`` is BFCL's function list exactly as shipped (BFCL dialect: ``"type":
    "dict"``, ``float``, ``tuple``, ``any``; Java / JavaScript type names in
    simple_java / simple_javascript; no language hint appended: BFCL's checker reads
    these specs, and ``normalize_tools(tools, language=language_of(category))``
    gives what a model is shown).
    ``ground_truth`` is BFCL's possible-answer list ``[{func_name: {param:
    [acceptable values...]}}]`` ("" among the values = may be omitted); [] for
    irrelevance categories.
    """

    id: str
    category: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    ground_truth: list[dict[str, Any]] = field(default_factory=list)



def _unknown_category(category: object) -> ToolprmError:
    return ToolprmError(
        f"unknown BFCL category {category!r}; valid categories: "
        f"test (non-live) {', '.join(TEST_CATEGORIES + LANGUAGE_CATEGORIES)}; "
        f"train (live) {', '.join(TRAIN_CATEGORIES)}; "
        f"held-out others {', '.join(OTHER_CATEGORIES)}"
    )


def _read_jsonl(*parts: str) -> list[dict[str, Any]]:
    resource = importlib.resources.files("bfcl_eval").joinpath("data", *parts)
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError as exc:  # pragma: no cover - broken install
        raise ToolprmError(
            f"BFCL data file {'/'.join(parts)} not found inside bfcl_eval; "
            "install it with `pip install --no-deps bfcl-eval`"
        ) from exc
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@functools.lru_cache(maxsize=None)
def _raw_entries(category: str) -> tuple[tuple[dict, list], ...]:
    prompts = _read_jsonl(f"{_VERSION_PREFIX}_{category}.json")
    if category in IRRELEVANCE_CATEGORIES:
        return tuple((p, []) for p in prompts)
    answers = _read_jsonl("possible_answer", f"{_VERSION_PREFIX}_{category}.json")
    if len(answers) != len(prompts):
        raise ToolprmError(
            f"BFCL {category}: {len(prompts)} questions but {len(answers)} possible answers"
        )
    # BFCL's runner aligns questions and answers by position; check the ids agree.
    for p, a in zip(prompts, answers):
        if p["id"] != a["id"]:
            raise ToolprmError(
                f"BFCL {category}: question {p['id']!r} is paired with answer {a['id']!r}"
            )
    return tuple((p, a["ground_truth"]) for p, a in zip(prompts, answers))


def spread(n: int, limit: int) -> list[int]:
    """``limit`` distinct indices evenly spread over range(n), always the same."""
    if limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


def check_limit(limit: object) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ToolprmError(f"limit must be a non-negative integer or None, got {limit!r}")


def bfcl_cases(category: str, limit: int | None = None) -> list[Case]:
    """The cases of one of BFCL's own categories, in BFCL's order (``load_cases``
    serves every category)."""
    if category not in CATEGORIES + LANGUAGE_CATEGORIES:
        raise _unknown_category(category)
    check_limit(limit)
    entries = _raw_entries(category)
    picked = range(len(entries)) if limit is None else spread(len(entries), limit)
    cases = []
    for i in picked:
        prompt, answer = entries[i]
        messages = [m for turn in prompt["question"] for m in turn]
        cases.append(
            Case(
                id=prompt["id"],
                category=category,
                messages=copy.deepcopy(messages),
                tools=copy.deepcopy(prompt["function"]),
                ground_truth=copy.deepcopy(answer),
            )
        )
    return cases


# --------------------------------------------------------------------------- split guard


def language_of(category: str) -> str:
    """The language of a category's specs and answers: "java", "javascript" or
    "python" (BFCL's own rule, ``bfcl_eval.utils.is_java`` / ``is_js``, on the
    categories loaded here)."""
    return {"simple_java": "java", "simple_javascript": "javascript"}.get(category, "python")


def category_of(case_id: str) -> str | None:
    """The BFCL category an id belongs to, or None for a non-BFCL id."""
    m = _ANY_ID.match(case_id)
    return m.group(1) if m else None


def split_of(query_id: str, val_share: float, seed: int = 0) -> str:
    """"val" for a stable, seeded ``val_share`` of query ids (a hash), else "train"."""
    h = int(hashlib.sha256(f"{seed}:{query_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_share else "train"


#: The held-out live queries every reader is compared on: a stable hash of the query id
#: puts this share of the live queries here; no reader trains on them.
HELD_OUT_SHARE, HELD_OUT_SEED = 0.12, 13


def held_out(case_id: str) -> bool:
    """Is this live query held out from every reader's training data?"""
    return split_of(case_id, HELD_OUT_SHARE, HELD_OUT_SEED) == "val"


def assert_not_test(case_ids: Iterable[str | Case] | str | Case) -> None:
    """Raise ToolprmError if any id belongs to a non-live (test) BFCL category.

    Accepts ids or Case objects; ids from live categories or from outside BFCL pass.
    """
    if isinstance(case_ids, (str, Case)):
        case_ids = [case_ids]
    bad = []
    for item in case_ids:
        cid = item.id if isinstance(item, Case) else item
        if not isinstance(cid, str):
            raise ToolprmError(f"case id must be a string, got {cid!r}")
        if _NON_LIVE_ID.match(cid):
            bad.append(cid)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ToolprmError(
            f"{len(bad)} case(s) from BFCL's non-live test categories ({shown}); "
            f"the test set ({', '.join(TEST_CATEGORIES + LANGUAGE_CATEGORIES)}) must never be trained or "
            f"tuned on — use the live categories ({', '.join(TRAIN_CATEGORIES)})"
        )


# --------------------------------------------------------------------------- answers


def _pick(alternatives: list) -> tuple[bool, Any]:
    """First acceptable value that is not the "may be omitted" marker ""."""
    for value in alternatives:
        if value != "":
            return True, value
    return False, None


def _pick_dict(answer: dict) -> dict:
    """A dict-typed value in a possible answer maps each key to its alternatives."""
    out = {}
    for key, alternatives in answer.items():
        if not isinstance(alternatives, list) or not alternatives:
            out[key] = copy.deepcopy(alternatives)
            continue
        if alternatives[0] == "":
            continue  # optional key, omitted
        out[key] = copy.deepcopy(alternatives[0])
    return out


def ground_truth_calls(case: Case) -> list[dict[str, Any]]:
    """One correct answer for ``case`` in our calls format (``[]`` for irrelevance).

    Per parameter: omitted when its first acceptable value is "" (optional) and the
    schema does not require it, or when "" is acceptable and the schema lacks the
    parameter (a BFCL answer-key slip); otherwise the first acceptable value other
    than "" (a required parameter whose only acceptable value is "" gets "", which
    the string checker accepts).  Values of ``dict`` parameters (and the items of arrays of dicts)
    list alternatives per key in BFCL's answers; those are resolved the same way.
    Java and JavaScript values are written as the literal strings BFCL asks a model
    for (``literals.py``).
    """
    language = language_of(case.category)
    tools = {t["name"]: t for t in case.tools}
    calls = []
    for answer in case.ground_truth:
        (name, params), = answer.items()
        schema = tools.get(name, {}).get("parameters", {})
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        arguments: dict[str, Any] = {}
        for param, alternatives in params.items():
            if "" in alternatives and (
                param not in props or (alternatives[0] == "" and param not in required)
            ):
                continue
            found, value = _pick(alternatives)
            if not found:
                if param not in required or alternatives != [""]:
                    continue
                value = ""  # required, and "" is the only acceptable value
            spec = props.get(param, {})
            if language != "python":
                if isinstance(value, dict):  # HashMap / dict: alternatives per key
                    value = _pick_dict(value)
                value = literal(value, spec, language)
            elif spec.get("type") == "dict" and isinstance(value, dict):
                value = _pick_dict(value)
            elif (
                spec.get("type") == "array"
                and spec.get("items", {}).get("type") == "dict"
                and isinstance(value, list)
            ):
                value = [_pick_dict(v) if isinstance(v, dict) else v for v in value]
            arguments[param] = copy.deepcopy(value)
        calls.append({"name": name, "arguments": arguments})
    return calls
