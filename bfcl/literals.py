"""BFCL's Java / JavaScript answers written as the literal strings a model gives.

BFCL asks a model for every Java or JavaScript parameter as a string holding the
language's literal (``"42L"``, ``"new ArrayList<>(Arrays.asList(1, 2))"``,
``"{method: \\"GET\\"}"``). Its checker parses that string with its type converter
(``bfcl_eval/eval_checker/ast_eval/type_convertor/{java,js}_type_converter.py``)
and compares the result with the possible answers, which hold parsed values
(``42``, ``[1, 2]``, ``{"method": ["GET"]}``). ``literal`` goes the other way, for
``ground_truth_calls``: it writes a value in the form those converters read back
to the same value, following their quirks (e.g. the Java Array parser keeps the
quotes of String elements, so they are written bare; the ArrayList parser strips
them, so they are quoted). A string answer for a non-string type is a variable
name or an expression (``"ResultSet.TYPE_SCROLL_INSENSITIVE"``) and is written as it is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# Java element type (BFCL's name) -> the type written in `new <type>[]{...}`.
_JAVA_ARRAY = {"String": "String", "integer": "int", "long": "long", "short": "short", "byte": "byte",
               "float": "float", "double": "double", "boolean": "boolean", "char": "char"}


def literal(value: Any, spec: dict, language: str) -> str:
    """``value`` (a parsed answer) as the literal string BFCL's ``language``
    ("java" or "javascript") converter reads back, for a parameter declared ``spec``."""
    kind = spec.get("type")
    item = (spec.get("items") or {}).get("type")
    if isinstance(value, str):
        return value  # a string, a variable name or an expression: all written bare
    return _java(value, kind, item) if language == "java" else _js(value, kind, item)


def _java(value: Any, kind: str | None, item: str | None) -> str:
    if kind == "Array":
        elements = ", ".join(_java_scalar(v, item) for v in value)  # String elements bare: see above
        return f"new {_JAVA_ARRAY.get(item, 'Object')}[]{{{elements}}}"
    if kind == "ArrayList":
        if not value:
            return "new ArrayList<>()"
        quote = item in ("String", "char")  # this parser strips one character each side
        elements = ", ".join(f'"{v}"' if quote else _java_scalar(v, item) for v in value)
        return f"new ArrayList<>(Arrays.asList({elements}))"
    if kind == "HashMap":  # values read by parse_java_value: quoted strings, true, 5L, 1.5f, 3
        puts = " ".join(f'put("{k}", {_java_value(v)});' for k, v in value.items())
        return f"new HashMap<String, Object>() {{{{ {puts} }}}}"
    return _java_scalar(value, kind)


def _java_scalar(value: Any, kind: str | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "long":
        return f"{value}L"
    if kind == "float":
        return f"{_number(value)}f"
    if isinstance(value, (int, float)):
        return _number(value)
    return str(value)


def _java_value(value: Any) -> str:
    """A HashMap value as ``parse_java_value`` reads it (no declared type)."""
    if isinstance(value, str):
        return f'"{value}"'
    return _java_scalar(value, None)


def _js(value: Any, kind: str | None, item: str | None) -> str:
    if kind == "array":
        return "[" + ", ".join(_js_scalar(v, item) for v in value) + "]"
    if kind == "dict":
        return "{" + ", ".join(f"{k}: {_js_value(v)}" for k, v in value.items()) + "}"
    return _js_scalar(value, kind)


def _js_scalar(value: Any, kind: str | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "Bigint":
        return f"{value}n"
    if isinstance(value, (int, float)):
        return _number(value)
    return str(value)  # an array element: a string bare, which the parser keeps


def _js_value(value: Any) -> str:
    """A dict entry as ``parse_js_collection`` reads it: arrays and objects nested,
    strings quoted (it strips quotes, then reads true/false and numbers)."""
    if isinstance(value, list):
        return "[" + ", ".join(_js_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_js_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return f'"{value}"'
    return _js_scalar(value, None)


def _number(value: int | float) -> str:
    """A number without an exponent: BFCL's JavaScript float pattern has none."""
    if isinstance(value, int):
        return str(value)
    return format(Decimal(repr(value)), "f")
