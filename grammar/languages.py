"""BFCL's Java and JavaScript tool specs, turned into what BFCL shows a model.

BFCL's simple_java and simple_javascript cases declare parameters with the
language's type names ("String", "HashMap", "long", "Boolean", ...). BFCL does
not ask for those values as JSON: before prompting it turns every top-level
parameter into a JSON string and appends to its description which literal the
string must hold (``bfcl_eval.utils._func_doc_language_specific_pre_processing``);
its checker then parses the string with the language's type converter
(``bfcl_eval/eval_checker/ast_eval/type_convertor``). ``as_bfcl_strings`` does
the same edit, word for word, so the grammar constrains each value to a JSON
string and the prompt carries BFCL's hints. Python specs are left alone: this
project does not append BFCL's "Python 3 syntax" note (its JSON values need none).
"""
from __future__ import annotations

import copy
import json
from typing import Any

from toolprm.errors import ToolSchemaError

#: The spec languages ``normalize_tools`` reads; "python" is BFCL's plain dialect.
LANGUAGES = ("python", "java", "javascript")

# The type names BFCL's checker knows: the keys of JAVA_TYPE_CONVERSION and
# JS_TYPE_CONVERSION (bfcl_eval/constants/type_mappings.py; a test keeps them equal).
# Its checker looks every parameter's type up there and raises KeyError on any
# other name, so an unknown name is refused here rather than failing at scoring.
JAVA_TYPES = frozenset({"byte", "short", "integer", "float", "double", "long", "boolean", "char",
                        "Array", "ArrayList", "Set", "HashMap", "Hashtable", "Queue", "Stack",
                        "String", "any"})
JAVASCRIPT_TYPES = frozenset({"String", "integer", "float", "Bigint", "Boolean", "dict", "array",
                              "any"})

# language -> (its name in BFCL's hints, its type names, the list types whose
# element type BFCL names in the hint, and the note BFCL appends to the tool's description)
_LANG = {
    "java": ("Java", JAVA_TYPES, ("ArrayList", "Array"),
             " Note that the provided function is in Java 8 SDK syntax."),
    "javascript": ("JavaScript", JAVASCRIPT_TYPES, ("array",),
                   " Note that the provided function is in JavaScript syntax."),
}


def as_bfcl_strings(spec: dict, language: str, tool: str, path: str) -> dict:
    """A copy of the bare tool spec ``spec`` (``{name, description, parameters}``)
    with BFCL's edit for ``language`` ("java" or "javascript") applied: each
    top-level parameter becomes ``{"type": "string"}`` with BFCL's hint appended to
    its description. ``tool`` and ``path`` name the spec in errors."""
    lang, known, lists, note = _LANG[language]
    out = copy.deepcopy(spec)
    out["description"] = _append(out.get("description"), note)
    params = out.get("parameters")
    if params is None:
        return out
    props = params.get("properties", {}) if isinstance(params, dict) else None
    if not isinstance(props, dict):
        return out  # malformed: the normalizer reports it with its own path
    for key, value in props.items():
        where = f"{path}.parameters.properties.{key}"
        if not isinstance(value, dict):
            raise ToolSchemaError(f"parameter {key!r} must be an object schema", tool, where)
        kind = value.get("type")
        if not isinstance(kind, str) or kind not in known:
            raise ToolSchemaError(f"parameter {key!r} has type {kind!r}, which is not a BFCL "
                                  f"{lang} type (known: {', '.join(sorted(known))})", tool, where + ".type")
        if kind == "any":
            hint = f" This parameter can be of any type of {lang} object in string representation."
        else:
            hint = f" This is {lang} {kind} type parameter in string representation."
        if kind in lists:
            # BFCL names the element type in the hint, and its checker parses the
            # elements by it: it must be there and be a known name too.
            items = value.get("items")
            item = items.get("type") if isinstance(items, dict) else None
            if not isinstance(item, str) or item not in known:
                raise ToolSchemaError(f"parameter {key!r} ({kind}) has element type {item!r}, which is "
                                      f"not a BFCL {lang} type (known: {', '.join(sorted(known))})",
                                      tool, where + ".items.type")
            hint += f" The list elements are of type {item}; they are not in string representation."
            del value["items"]
        if language == "javascript" and kind == "dict" and "properties" in value:
            hint += (" The dictionary entries have the following schema; they are not in string "
                     f"representation. {json.dumps(value['properties'])}")
            del value["properties"]
        value["description"] = _append(value.get("description"), hint)
        value["type"] = "string"
    return out


def _append(description: Any, hint: str) -> Any:
    """BFCL's ``description + hint``; a missing description is just the hint."""
    if description is None:
        return hint.lstrip()
    return description + hint if isinstance(description, str) else description
