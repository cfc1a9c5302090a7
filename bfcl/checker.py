"""Scoring with BFCL's own AST checker, called the way BFCL's eval runner
(``bfcl_eval/eval_checker/eval_runner.py``) calls it for a function-calling model
whose output decodes as ``[{"name": ..., "arguments": {...}}]`` (e.g. BFCL's Hammer
and OpenAI-FC handlers):

* AST categories (simple_python, multiple, parallel, parallel_multiple and their
  live_* twins; simple_java, simple_javascript): the output must decode into calls
  in "function-calling format" (``[{func_name: {param: value}}]``), then
  ``ast_checker(tools, decoded, possible_answer, language, <category>, model_name)``
  decides, with BFCL's raw specs and ``Language.JAVA`` / ``JAVASCRIPT`` / ``PYTHON``
  by category as ``ast_file_runner`` picks it (Java and JavaScript values must be
  strings holding the literal; the checker parses them by the declared type).  The
  checker dispatches on the category string: "parallel" in it → unordered
  matching of every call, else "multiple" in it → exactly one call, checked
  against the first possible answer, else (simple) exactly one call.
* Irrelevance categories (irrelevance, live_irrelevance): no checker; the case
  passes iff the output contains no call — the empty list, or an output that
  cannot be decoded into calls at all (BFCL's ``relevance_file_runner``).

``param_ok`` and ``call_ok`` run BFCL's ``simple_function_checker`` on one
parameter or one call (the step labels of the PRM data use them).
"""

from __future__ import annotations

import copy
import functools
import importlib
import sys
import types
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from toolprm.errors import ToolprmError

from .data import _LOADABLE, IRRELEVANCE_CATEGORIES, OTHER_CATEGORIES, Case, _unknown_category, language_of

# The name we score under. BFCL looks it up (with "_" → "/") in MODEL_CONFIG_MAPPING
# only to decide underscore_to_dot for function names containing ".".
_MODEL_NAME = "toolprm"
_MODEL_CONFIG_MODULE = "bfcl_eval.constants.model_config"
_AST_CHECKER_MODULE = "bfcl_eval.eval_checker.ast_eval.ast_checker"


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
            "import toolprm.bfcl first"
        ) from exc
    if to_dot:
        raise ToolprmError(f"BFCL model config for {_MODEL_NAME!r} must keep '.' in names")
    return module


@functools.lru_cache(maxsize=None)
def _language(category: str):
    """BFCL's ``Language`` for a category (``ast_file_runner``: is_java / is_js)."""
    enum = importlib.import_module("bfcl_eval.constants.enums").Language
    return {"java": enum.JAVA, "javascript": enum.JAVASCRIPT, "python": enum.PYTHON}[language_of(category)]


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
    if case.category not in _LOADABLE:
        raise _unknown_category(case.category)
    # other benchmarks' call lists are checked as BFCL's parallel_multiple: every gold
    # call matched by one output call, in any order (bfcl.nestful)
    mode = "parallel_multiple" if case.category in OTHER_CATEGORIES else case.category
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

    try:
        result = _checker().ast_checker(
            copy.deepcopy(case.tools),
            decoded,
            copy.deepcopy(case.ground_truth),
            _language(case.category),
            mode,
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


def _tool(case: Case, name: str) -> dict | None:
    return next((t for t in case.tools if t.get("name") == name), None)


def _simple_check(case: Case, tool: dict, name: str, arguments: dict, answer: dict) -> bool:
    """BFCL's ``simple_function_checker`` on one call; a checker crash counts as wrong."""
    try:
        result = _checker().simple_function_checker(
            copy.deepcopy(tool), {name: copy.deepcopy(arguments)}, {name: copy.deepcopy(answer)},
            _language(case.category), _MODEL_NAME)
    except Exception:
        return False
    return bool(result["valid"])


def param_ok(case: Case, name: str, key: str, value: Any, alternatives: list) -> bool:
    """Whether ``value`` is acceptable for parameter ``key`` of tool ``name``, whose
    possible answers are ``alternatives``, under BFCL's checker (its type rules,
    int → float, string normalization, dict and list-of-dict answers)."""
    tool = _tool(case, name)
    props = (tool or {}).get("parameters", {}).get("properties", {})
    if key not in props:
        return False
    one = {"name": name, "parameters": {"type": "dict", "properties": {key: props[key]}, "required": []}}
    return _simple_check(case, one, name, {key: value}, {key: alternatives})


def call_ok(case: Case, call: dict, answer: tuple[str, dict]) -> bool:
    """Whether a finished call (``{"name", "arguments"}``) matches one possible answer
    ``(name, {param: alternatives})`` under BFCL's ``simple_function_checker``."""
    name, params = answer
    tool = _tool(case, name)
    if call.get("name") != name or tool is None:
        return False
    return _simple_check(case, tool, name, call.get("arguments", {}), params)
