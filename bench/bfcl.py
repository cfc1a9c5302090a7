"""BFCL v4 harness: load single-turn cases and score call lists with BFCL's own checker.

The data and the checker come from the PyPI package ``bfcl-eval`` (installed with
``--no-deps``).  Scoring goes through ``bfcl_eval.eval_checker.ast_eval.ast_checker``
itself, called the way BFCL's eval runner (``bfcl_eval/eval_checker/eval_runner.py``)
calls it for a function-calling model whose output decodes as
``[{"name": ..., "arguments": {...}}]`` (e.g. BFCL's Hammer and OpenAI-FC handlers):

* AST categories (simple_python, multiple, parallel, parallel_multiple and their
  live_* twins): the output must decode into calls in "function-calling format"
  (``[{func_name: {param: value}}]``), then ``ast_checker(tools, decoded,
  possible_answer, Language.PYTHON, <category>, model_name)`` decides.  The
  checker dispatches on the category string: "parallel" in it → unordered
  matching of every call, else "multiple" in it → exactly one call, checked
  against the first possible answer, else (simple) exactly one call.
* Irrelevance categories (irrelevance, live_irrelevance): no checker; the case
  passes iff the output contains no call — the empty list, or an output that
  cannot be decoded into calls at all (BFCL's ``relevance_file_runner``).

Train / test split (see DESIGN.md): the non-live categories are the test set and
must never be trained or tuned on; :func:`assert_not_test` guards training code.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.resources
import json
import re
import sys
import types
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from toolprm.grammar.errors import ToolprmError

__all__ = [
    "TEST_CATEGORIES",
    "TRAIN_CATEGORIES",
    "CATEGORIES",
    "IRRELEVANCE_CATEGORIES",
    "KNOWN_UNSATISFIABLE",
    "Case",
    "Verdict",
    "load_cases",
    "check",
    "ground_truth_calls",
    "category_of",
    "assert_not_test",
]

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
#: Categories without possible answers: a case passes iff no call is made.
IRRELEVANCE_CATEGORIES: tuple[str, ...] = ("irrelevance", "live_irrelevance")

#: Live cases that no output can pass under BFCL's checker: their answer keys are
#: defective (found by scoring ground_truth_calls on every case; see the tests).
#: Training code should skip them; the test categories have none.
KNOWN_UNSATISFIABLE: frozenset[str] = frozenset(
    {
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
_NON_LIVE_CATEGORIES: tuple[str, ...] = TEST_CATEGORIES + (
    "simple",
    "simple_java",
    "simple_javascript",
)
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
# The name we score under. BFCL looks it up (with "_" → "/") in MODEL_CONFIG_MAPPING
# only to decide underscore_to_dot for function names containing ".".
_MODEL_NAME = "toolprm"
_MODEL_CONFIG_MODULE = "bfcl_eval.constants.model_config"
_AST_CHECKER_MODULE = "bfcl_eval.eval_checker.ast_eval.ast_checker"


# --------------------------------------------------------------------------- data


@dataclass
class Case:
    """One single-turn BFCL question.

    ``tools`` is BFCL's function list exactly as shipped (BFCL dialect: ``"type":
    "dict"``, ``float``, ``tuple``, ``any``; no language hint appended).
    ``ground_truth`` is BFCL's possible-answer list ``[{func_name: {param:
    [acceptable values...]}}]`` ("" among the values = may be omitted); [] for
    irrelevance categories.
    """

    id: str
    category: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    ground_truth: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Verdict:
    """BFCL's judgement of one output.

    ``valid``: the output decoded into well-formed calls (a list of
    ``{"name": str, "arguments": dict}``; ``[]`` included).
    ``correct``: BFCL counts the case as passed.  For irrelevance categories an
    undecodable output (``valid`` False) is still correct, as in BFCL.
    ``errors``: BFCL's messages (empty when correct); ``error_type``: BFCL's
    error type string ("" when correct).
    """

    valid: bool
    correct: bool
    errors: list[str] = field(default_factory=list)
    error_type: str = ""


def _unknown_category(category: object) -> ToolprmError:
    return ToolprmError(
        f"unknown BFCL category {category!r}; valid categories: "
        f"test (non-live) {', '.join(TEST_CATEGORIES)}; "
        f"train (live) {', '.join(TRAIN_CATEGORIES)}"
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


def _spread(n: int, limit: int) -> list[int]:
    """``limit`` distinct indices evenly spread over range(n), always the same."""
    if limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


def load_cases(category: str, limit: int | None = None) -> list[Case]:
    """Load the cases of one BFCL category, in BFCL's order.

    ``limit`` picks a deterministic, evenly spread subset (indices ``i*n//limit``);
    ``None`` (or a limit ≥ the category size) loads all of them.
    """
    if category not in CATEGORIES:
        raise _unknown_category(category)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ToolprmError(f"limit must be a non-negative integer or None, got {limit!r}")
    entries = _raw_entries(category)
    picked = range(len(entries)) if limit is None else _spread(len(entries), limit)
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


def category_of(case_id: str) -> str | None:
    """The BFCL category an id belongs to, or None for a non-BFCL id."""
    m = _ANY_ID.match(case_id)
    return m.group(1) if m else None


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
            f"the test set ({', '.join(TEST_CATEGORIES)}) must never be trained or "
            f"tuned on — use the live categories ({', '.join(TRAIN_CATEGORIES)})"
        )


# --------------------------------------------------------------------------- checker


@functools.lru_cache(maxsize=1)
def _checker() -> types.ModuleType:
    """Import BFCL's ast_checker without importing every model handler.

    ``ast_checker`` does ``from bfcl_eval.constants.model_config import
    MODEL_CONFIG_MAPPING``; the real module imports all model handlers (openai,
    anthropic, ...).  For that one import we register a stand-in module whose
    mapping answers every lookup with ``underscore_to_dot = False`` (names with
    "." are compared as they are), then take the stand-in out of sys.modules
    again; ast_checker keeps its own reference to the mapping.
    """
    if _AST_CHECKER_MODULE in sys.modules:
        module = sys.modules[_AST_CHECKER_MODULE]
    else:
        installed = _MODEL_CONFIG_MODULE not in sys.modules
        if installed:
            config = types.SimpleNamespace(
                model_name=_MODEL_NAME,
                display_name=_MODEL_NAME,
                underscore_to_dot=False,
                is_fc_model=True,
            )
            stand_in = types.ModuleType(_MODEL_CONFIG_MODULE)
            stand_in.__doc__ = "toolprm stand-in: only what ast_checker reads."
            stand_in.MODEL_CONFIG_MAPPING = defaultdict(lambda: config)
            sys.modules[_MODEL_CONFIG_MODULE] = stand_in
        try:
            module = importlib.import_module(_AST_CHECKER_MODULE)
        except ImportError as exc:
            raise ToolprmError(
                f"cannot import BFCL's checker ({exc}); install it with "
                "`pip install --no-deps bfcl-eval`"
            ) from exc
        finally:
            if installed and sys.modules.get(_MODEL_CONFIG_MODULE) is stand_in:
                del sys.modules[_MODEL_CONFIG_MODULE]
                parent = sys.modules.get("bfcl_eval.constants")
                if getattr(parent, "model_config", None) is stand_in:
                    delattr(parent, "model_config")
    try:
        to_dot = module.MODEL_CONFIG_MAPPING[_MODEL_NAME.replace("_", "/")].underscore_to_dot
    except Exception as exc:  # real mapping loaded elsewhere, without our name
        raise ToolprmError(
            "BFCL's ast_checker was imported with the real model_config before toolprm "
            f"could register its stand-in, and it has no entry for {_MODEL_NAME!r}; "
            "import toolprm.bench.bfcl first"
        ) from exc
    if to_dot:
        raise ToolprmError(f"BFCL model config for {_MODEL_NAME!r} must keep '.' in names")
    return module


def _decode(calls: object) -> list[dict[str, Any]] | None:
    """Our calls → BFCL's decoded AST ``[{name: arguments}]``; None if malformed."""
    if not isinstance(calls, list):
        return None
    decoded = []
    for call in calls:
        if not isinstance(call, dict):
            return None
        name, arguments = call.get("name"), call.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return None
        decoded.append({name: copy.deepcopy(arguments)})
    return decoded


def _format_errors(errors: object) -> list[str]:
    if errors is None:
        return []
    if not isinstance(errors, list):
        errors = [errors]
    out: list[str] = []
    for err in errors:
        if isinstance(err, str):
            out.append(err)
        elif isinstance(err, dict):  # parallel checker: {"Model Result Index i": {...}}
            for key, sub in err.items():
                if isinstance(sub, dict) and "sub_error" in sub:
                    msgs = "; ".join(str(s) for s in sub.get("sub_error", []))
                    out.append(f"{key}: {msgs} [{sub.get('sub_error_type', '')}]")
                else:
                    out.append(f"{key}: {sub}")
        else:
            out.append(str(err))
    return out


def check(case: Case, calls: list[dict[str, Any]] | None) -> Verdict:
    """Score ``calls`` (``[{"name": str, "arguments": dict}, ...]``) on ``case``
    with BFCL's own checker, the way BFCL's eval runner does.

    ``calls=None`` means the model's text could not be decoded into calls (BFCL:
    a decode failure — wrong for AST categories, correct for irrelevance).
    """
    if case.category not in CATEGORIES:
        raise _unknown_category(case.category)
    decoded = None if calls is None else _decode(calls)

    if case.category in IRRELEVANCE_CATEGORIES:
        # relevance_file_runner: contain_func_call = decodes and is non-empty.
        contains_call = bool(decoded)
        if contains_call:
            return Verdict(
                valid=True,
                correct=False,
                errors=["Valid syntax. Successfully decode AST when it should not."],
                error_type="irrelevance_error:decoder_success",
            )
        return Verdict(valid=decoded is not None, correct=True)

    if calls is None:
        return Verdict(
            valid=False,
            correct=False,
            errors=["Invalid syntax. Failed to decode AST."],
            error_type="ast_decoder:decoder_failed",
        )
    if decoded is None:
        return Verdict(
            valid=False,
            correct=False,
            errors=[
                "Did not output in the specified format: expected a list of "
                '{"name": str, "arguments": dict}.'
            ],
            error_type="ast_decoder:decoder_wrong_output_format",
        )

    module = _checker()
    language = importlib.import_module("bfcl_eval.constants.enums").Language.PYTHON
    try:
        result = module.ast_checker(
            copy.deepcopy(case.tools),
            decoded,
            copy.deepcopy(case.ground_truth),
            language,
            case.category,
            _MODEL_NAME,
        )
    except Exception as exc:  # BFCL's runner would crash here; count it as wrong
        return Verdict(
            valid=True,
            correct=False,
            errors=[f"BFCL's checker raised {type(exc).__name__}: {exc}"],
            error_type="checker_exception",
        )
    if result["valid"]:
        return Verdict(valid=True, correct=True)
    return Verdict(
        valid=True,
        correct=False,
        errors=_format_errors(result.get("error")),
        error_type=str(result.get("error_type", "")),
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
    """
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
            if spec.get("type") == "dict" and isinstance(value, dict):
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
