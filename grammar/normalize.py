"""Tool specs in any supported dialect -> one normalized form (plain JSON Schema).

Accepted: OpenAI style ``{"type": "function", "function": {...}}``, bare
``{name, description, parameters}`` and BFCL's dialect (types ``dict``, ``float``,
``tuple``, ``any``; a property's ``optional`` flag). BFCL's Java and JavaScript
specs (``language="java"`` / ``"javascript"``) become string parameters with
BFCL's hints, as BFCL presents them to a model (``languages.py``). Anything the
grammar cannot express raises ToolSchemaError naming the tool and the JSON path;
nothing is silently relaxed.

Semantics kept exact (README, "Schema coverage"):
- a type-specific keyword constrains only its own type, so a schema without
  ``type`` becomes the union over the JSON types (TYPE_KEYWORDS);
- keywords beside anyOf/oneOf are merged into every alternative;
- const/enum values are filtered by the schema's other keywords;
- oneOf is enforced as anyOf only where its alternatives are provably disjoint
  (``disjoint.py``), else refused unless ``lenient``.
The normalized form may be stricter than the input (e.g. declared properties
close an object), never looser.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from toolprm.errors import ToolSchemaError

from .disjoint import disjoint, shape
from .languages import LANGUAGES, as_bfcl_strings
from .pattern_strings import string_node
from .regex import FORMAT_CHECKER, RegexError, format_fsm, pattern_fsm
from .strings import DEFAULT_MAX_STRING
from .numbers import MAX_FRAC_DIGITS, MAX_INT_DIGITS, NumberNode

#: How many calls an output may hold: mode -> (least, most or None for any number).
CALL_MODES = {"one": (1, 1), "one_or_more": (1, None), "any": (0, None)}

# Dialect type names -> JSON Schema type names.
TYPE_ALIASES = {
    "string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
    "null": "null", "array": "array", "object": "object",
    "dict": "object", "float": "number", "tuple": "array", "any": None,
}
# Keywords kept only for prompts or ignored as annotations.
ANNOTATIONS = {"description", "title", "default", "examples", "deprecated", "readOnly",
               "writeOnly", "$comment", "$schema", "$id", "optional"}
SUPPORTED = ANNOTATIONS | {
    "type", "enum", "const", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "items", "minItems", "maxItems", "properties", "required",
    "additionalProperties", "anyOf", "oneOf", "$ref", "$defs", "definitions", "pattern", "format"}

# Type-specific keywords. Per JSON Schema each constrains only instances of its own
# type: {"maxLength": 2} means "any non-string, or a string of at most 2 characters".
# A schema without "type" that has any of them becomes the union over ALL_TYPES,
# each branch with its own type's keywords (see _Normalizer.schema).
TYPE_KEYWORDS = {
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
    "array": ("items", "minItems", "maxItems"),
    "object": ("properties", "required", "additionalProperties"),
}
ALL_TYPES = ["string", "number", "boolean", "null", "array", "object"]
_TYPED = {k for kws in TYPE_KEYWORDS.values() for k in kws}

MAX_DEPTH = 32          # nesting deeper than this is rejected, not recursed into
MAX_REF_EXPANSIONS = 4  # a recursive $ref is unrolled at most this many times
MAX_ENUM = 20_000
MAX_SUBSCHEMAS = 20_000  # after $ref expansion: bounds the work on hostile specs
MAX_LITERAL_CHARS = 2_000_000  # JSON text of all enum/const/default values of a tool


@dataclass(frozen=True)
class Tool:
    """A tool with its parameters as normalized JSON Schema (an object schema)."""
    name: str
    description: str
    parameters: dict = field(hash=False)

    def spec(self) -> dict:
        """The bare ``{name, description, parameters}`` form, for prompts."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def normalize_tools(tools: Any, lenient: bool = False, language: str = "python") -> list[Tool]:
    """Validate and normalize a list of tool specs; raises ToolSchemaError on bad input.

    ``lenient``: a oneOf whose alternatives may overlap is read as anyOf (accepting a
    value that matches several alternatives) instead of being refused.
    ``language``: "python" for JSON Schema and BFCL's Python dialect; "java" or
    "javascript" for BFCL's Java / JavaScript specs, whose parameters become strings
    holding the language's literal, as BFCL asks of a model. Already normalized
    ``Tool`` objects pass through unchanged."""
    if language not in LANGUAGES:
        raise ToolSchemaError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, (list, tuple)):
        raise ToolSchemaError(f"tools must be a non-empty list of tool specs, got {type(tools).__name__}")
    if not tools:
        raise ToolSchemaError("tools must be a non-empty list of tool specs, got an empty list")
    out: list[Tool] = []
    seen: set[str] = set()
    for i, spec in enumerate(tools):
        tool = spec if isinstance(spec, Tool) else _normalize_tool(spec, f"$[{i}]", lenient, language)
        if tool.name in seen:
            raise ToolSchemaError("duplicate tool name", tool.name, f"$[{i}].name")
        seen.add(tool.name)
        out.append(tool)
    return out


def _normalize_tool(spec: Any, path: str, lenient: bool = False, language: str = "python") -> Tool:
    if not isinstance(spec, dict):
        raise ToolSchemaError(f"a tool spec must be an object, got {type(spec).__name__}", None, path)
    if spec.get("type") == "function" and isinstance(spec.get("function"), dict):
        spec, path = spec["function"], path + ".function"
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolSchemaError("missing or empty tool name", None, path + ".name")
    if any(ord(c) < 0x20 for c in name) or len(name) > 256:
        raise ToolSchemaError("tool name has control characters or is over 256 characters",
                              name, path + ".name")
    if language != "python":
        spec = as_bfcl_strings(spec, language, name, path)
    desc = spec.get("description", "")
    if not isinstance(desc, str):
        raise ToolSchemaError("description must be a string", name, path + ".description")
    params = spec.get("parameters", {"type": "object", "properties": {}})
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise ToolSchemaError("parameters must be an object schema", name, path + ".parameters")
    if "type" not in params and any(k in params for k in TYPE_KEYWORDS["object"]):
        # Arguments are always an object: the root's object keywords need no type.
        params = {"type": "object", **params}
    norm = _Normalizer(name, params, lenient).schema(params, path + ".parameters", 0)
    if norm.get("type") != "object":
        raise ToolSchemaError("parameters must have type object (or dict)", name,
                              path + ".parameters.type")
    if "additionalProperties" not in params:  # arguments take no unknown keys unless asked to
        norm["additionalProperties"] = False
    return Tool(name, desc, norm)


class _Normalizer:
    def __init__(self, tool: str, root: dict, lenient: bool = False):
        self.tool = tool
        self.lenient = lenient
        self.defs = {}
        for key in ("$defs", "definitions"):
            if isinstance(root.get(key), dict):
                self.defs.update({f"#/{key}/{k}": v for k, v in root[key].items()})
        self.ref_depth: dict[str, int] = {}
        self.count_nodes = 0
        self.literal_chars = 0

    def error(self, msg: str, path: str) -> ToolSchemaError:
        return ToolSchemaError(msg, self.tool, path)

    def schema(self, s: Any, path: str, depth: int) -> dict:
        if depth > MAX_DEPTH:
            raise self.error(f"schema nested deeper than {MAX_DEPTH} levels", path)
        self.count_nodes += 1
        if self.count_nodes > MAX_SUBSCHEMAS:
            raise self.error(f"schema has more than {MAX_SUBSCHEMAS} subschemas "
                             "(after expanding $ref)", path)
        if s is True or s == {}:
            return {}
        if s is False:
            raise self.error("schema false matches no value", path)
        if not isinstance(s, dict):
            raise self.error(f"a schema must be an object, got {type(s).__name__}", path)
        for key in s:
            if key not in SUPPORTED:
                raise self.error(f"unsupported JSON Schema keyword {key!r}", f"{path}.{key}")
        if "$ref" in s:
            return self.ref(s, path, depth)
        out: dict = self.annotations(s, path)
        if "anyOf" in s and "oneOf" in s:
            raise self.error("anyOf and oneOf in one schema are not supported (nest one inside "
                             "the other)", f"{path}.oneOf")
        for kw in ("anyOf", "oneOf"):
            if kw in s:
                out["anyOf"] = self.alternatives(s, kw, path, depth)
                return out
        if "const" in s or "enum" in s:
            out["enum"] = self.literals(s, path, depth)
            return out
        types = self.types(s, path)
        if types is None:
            if not any(k in s for k in _TYPED):
                return out  # any JSON value
            types = ALL_TYPES  # see TYPE_KEYWORDS
        variants = [self.typed(t, s, path, depth) for t in types]
        if len(variants) == 1:
            out.update(variants[0])
            return out
        out["anyOf"] = variants
        return out

    def alternatives(self, s: dict, kw: str, path: str, depth: int) -> list[dict]:
        """The normalized alternatives of anyOf/oneOf, each with the keywords beside the
        anyOf/oneOf merged in (they apply to every alternative). A oneOf must have
        pairwise disjoint alternatives (then it equals anyOf), unless lenient."""
        alts = s[kw]
        if not isinstance(alts, list) or not alts:
            raise self.error(f"{kw} must be a non-empty list", f"{path}.{kw}")
        rest = {k: v for k, v in s.items() if k not in (kw, "$defs", "definitions", *ANNOTATIONS)}
        merged = [(i, self.merge(rest, a, f"{path}.{kw}[{i}]")) for i, a in enumerate(alts)]
        merged = [(i, a) for i, a in merged if a is not False]  # false matches nothing
        if not merged:
            raise self.error(f"no alternative of {kw} can match a value", f"{path}.{kw}")
        if kw == "oneOf" and not self.lenient:
            shapes = [(i, shape(a, self.defs.get)) for i, a in merged]
            for n, (i, a) in enumerate(shapes):
                for j, b in shapes[n + 1:]:
                    if not disjoint(a, b):
                        raise self.error(
                            f"oneOf alternatives {i} and {j} may both match a value, and the grammar "
                            "cannot enforce that exactly one matches (alternatives of different types "
                            "or different const/enum values can); compile with lenient=True to read "
                            "this oneOf as anyOf", f"{path}.oneOf")
        return [self.schema(a, f"{path}.{kw}[{i}]", depth + 1) for i, a in merged]

    def merge(self, rest: dict, alt: Any, path: str) -> Any:
        """``alt`` with the sibling keywords ``rest`` added (both must hold). A keyword in
        both must agree, except ``required``, whose lists are joined."""
        if alt is True or not rest:
            return rest if alt is True else alt
        if not isinstance(alt, dict):
            return alt  # false, or malformed (reported by schema())
        out = {**rest, **alt}
        for a, b in ((rest, alt), (alt, rest)):
            # additionalProperties covers the keys outside its own schema's properties:
            # merging in other properties would change what it covers.
            if "additionalProperties" in a and b.get("properties", a.get("properties")) != a.get("properties"):
                raise self.error("additionalProperties beside the alternatives with properties inside "
                                 "one (or the reverse) is not supported", path)
        for k in rest.keys() & alt.keys():
            if k == "required" and isinstance(rest[k], list) and isinstance(alt[k], list):
                out[k] = list(dict.fromkeys(rest[k] + alt[k]))
            elif rest[k] != alt[k]:
                raise self.error(f"{k!r} is given both beside the alternatives and inside this one, "
                                 "with different values; combining them is not supported", f"{path}.{k}")
        return out

    def literals(self, s: dict, path: str, depth: int) -> list:
        """The values of const/enum that also satisfy the schema's other keywords."""
        if "const" in s:
            vals = [self.json_value(s["const"], f"{path}.const")]
        else:
            vals = s["enum"]
            if not isinstance(vals, list) or not vals:
                raise self.error("enum must be a non-empty list", f"{path}.enum")
            if len(vals) > MAX_ENUM:
                raise self.error(f"enum has {len(vals)} values, more than {MAX_ENUM}", f"{path}.enum")
            vals = [self.json_value(v, f"{path}.enum[{i}]") for i, v in enumerate(vals)]
        rest = {k: v for k, v in s.items() if k not in ("const", "$defs", "definitions", *ANNOTATIONS)}
        if "const" not in s:
            rest.pop("enum")
        kw = "const" if "const" in s else "enum"
        types = self.types(s, path)
        if types is not None:
            vals = [v for v in vals if _json_type_ok(v, types)]
            if not vals:
                raise self.error(f"no {kw} value matches type {s['type']!r}", f"{path}.{kw}")
        if set(rest) - {"type"}:  # keep the values the other keywords (normalized: no $ref left) accept
            check = jsonschema.Draft202012Validator(self.schema(rest, path, depth + 1),
                                                    format_checker=FORMAT_CHECKER)
            vals = [v for v in vals if check.is_valid(v)]
            if not vals:
                raise self.error(f"no {kw} value satisfies the schema's other keywords", f"{path}.{kw}")
        return list({json.dumps(v, sort_keys=True): v for v in vals}.values())

    def ref(self, s: dict, path: str, depth: int) -> dict:
        ref = s["$ref"]
        if not isinstance(ref, str) or ref not in self.defs:
            raise self.error(f"$ref {ref!r} does not point into this schema's $defs/definitions",
                             f"{path}.$ref")
        siblings = [k for k in s if k not in ANNOTATIONS and k not in ("$ref", "$defs", "definitions")]
        if siblings:  # applying them too is not supported; dropping them would relax
            raise self.error(f"keywords next to $ref are not supported: {', '.join(siblings)}",
                             f"{path}.{siblings[0]}")
        n = self.ref_depth.get(ref, 0)
        if n >= MAX_REF_EXPANSIONS:
            raise self.error(f"$ref {ref!r} is recursive beyond {MAX_REF_EXPANSIONS} levels",
                             f"{path}.$ref")
        self.ref_depth[ref] = n + 1
        try:
            target = self.schema(self.defs[ref], f"{path}.$ref", depth + 1)
        finally:
            self.ref_depth[ref] = n
        return {**target, **self.annotations(s, path)}

    def types(self, s: dict, path: str) -> list[str] | None:
        t = s.get("type")
        if t is None:
            return None
        names = t if isinstance(t, list) else [t]
        out = []
        for name in names:
            if not isinstance(name, str) or name not in TYPE_ALIASES:
                raise self.error(f"unknown type {name!r} (supported: "
                                 f"{', '.join(sorted(TYPE_ALIASES))})", f"{path}.type")
            if TYPE_ALIASES[name] is None:
                return None
            out.append(TYPE_ALIASES[name])
        return list(dict.fromkeys(out)) or None

    def typed(self, t: str, s: dict, path: str, depth: int) -> dict:
        out: dict = {"type": t}
        if t == "string":
            for k in ("minLength", "maxLength"):
                if k in s:
                    out[k] = self.count(s[k], f"{path}.{k}")
            if out.get("minLength", 0) > out.get("maxLength", math.inf):
                raise self.error("minLength is greater than maxLength", path)
            self.regular(s, out, path)
        elif t in ("integer", "number"):
            for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if k in s:
                    v = s[k]
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                        raise self.error(f"{k} must be a finite number", f"{path}.{k}")
                    out[k] = v
            if not NumberNode(t == "integer", out).satisfiable():
                raise self.error(f"no {t} within the bounds (at most {MAX_INT_DIGITS} integer and "
                                 f"{MAX_FRAC_DIGITS} fraction digits) satisfies them", path)
        elif t == "array":
            if "items" in s:
                if isinstance(s["items"], list):  # tuple-style items
                    raise self.error("tuple-style 'items' lists are not supported", f"{path}.items")
                out["items"] = self.schema(s["items"], f"{path}.items", depth + 1)
            for k in ("minItems", "maxItems"):
                if k in s:
                    out[k] = self.count(s[k], f"{path}.{k}")
            if out.get("minItems", 0) > out.get("maxItems", math.inf):
                raise self.error("minItems is greater than maxItems", path)
        elif t == "object":
            props = s.get("properties", {})
            if not isinstance(props, dict):
                raise self.error("properties must be an object", f"{path}.properties")
            out["properties"] = {}
            for k, v in props.items():
                if not isinstance(k, str) or not k:
                    raise self.error("property names must be non-empty strings", f"{path}.properties")
                out["properties"][k] = self.schema(v, f"{path}.properties.{k}", depth + 1)
            req = s.get("required", [])
            if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
                raise self.error("required must be a list of strings", f"{path}.required")
            extra = s.get("additionalProperties", not props)  # a bare dict takes any keys
            for r in req:
                if r not in props:
                    if extra is False:
                        raise self.error(f"required property {r!r} is not in properties and "
                                         "additionalProperties is false", f"{path}.required")
                    # JSON Schema: a required key outside properties takes the
                    # additionalProperties schema.
                    out["properties"][r] = {} if extra is True else self.schema(
                        extra, f"{path}.additionalProperties", depth + 1)
            optional = {k for k, v in props.items() if isinstance(v, dict) and v.get("optional") is True}
            out["required"] = [r for r in dict.fromkeys(req) if r not in optional]
            if extra is False:
                out["additionalProperties"] = False
            elif extra is True:
                out["additionalProperties"] = True
            else:
                out["additionalProperties"] = self.schema(extra, f"{path}.additionalProperties", depth + 1)
        return out

    def regular(self, s: dict, out: dict, path: str) -> None:
        """pattern / format: kept when the grammar can enforce them exactly (regex.py)."""
        for k in ("pattern", "format"):
            if k in s:
                if not isinstance(s[k], str):
                    raise self.error(f"{k} must be a string", f"{path}.{k}")
                try:
                    (pattern_fsm if k == "pattern" else format_fsm)(s[k])
                except RegexError as e:
                    raise self.error(f"pattern {s[k]!r}: {e}" if k == "pattern" else str(e), f"{path}.{k}") from None
                out[k] = s[k]
        if ("pattern" in out or "format" in out) and not string_node(out).satisfiable():
            raise self.error("no string within minLength/maxLength (or the default cap of "
                             f"{DEFAULT_MAX_STRING} characters) matches the pattern/format", path)

    def count(self, v: Any, path: str) -> int:
        if isinstance(v, float) and v.is_integer():  # JSON Schema: 2.0 is the integer 2
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.error("must be a non-negative integer", path)
        return v

    def json_value(self, v: Any, path: str, limit: int = 4096) -> Any:
        try:
            text = json.dumps(v, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise self.error(f"value is not finite JSON: {e}", path) from None
        if len(text) > limit:
            raise self.error(f"value longer than {limit} characters of JSON", path)
        self.literal_chars += len(text)
        if self.literal_chars > MAX_LITERAL_CHARS:
            raise self.error(f"enum/const/default values add up to more than {MAX_LITERAL_CHARS} "
                             "characters of JSON", path)
        return v

    def annotations(self, s: dict, path: str) -> dict:
        """description, title (strings) and default (JSON), kept for prompts."""
        for k in ("description", "title"):
            if k in s and not isinstance(s[k], str):
                raise self.error(f"{k} must be a string", f"{path}.{k}")
        if "default" in s:
            self.json_value(s["default"], f"{path}.default", limit=100_000)
        return {k: s[k] for k in ("description", "title", "default") if k in s}


def _json_type_ok(v: Any, types: list[str]) -> bool:
    for t in types:
        if t == "string" and isinstance(v, str):
            return True
        if t == "boolean" and isinstance(v, bool):
            return True
        if t == "null" and v is None:
            return True
        if t == "integer" and isinstance(v, int) and not isinstance(v, bool):
            return True
        if t == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True
        if t == "array" and isinstance(v, list):
            return True
        if t == "object" and isinstance(v, dict):
            return True
    return False


def call_list_schema(tools: list[Tool], calls: str = "one_or_more", max_calls: int | None = None) -> dict:
    """JSON Schema of the whole output: a list of calls to the given tools."""
    variants = []
    for t in tools:
        variants.append({"type": "object", "properties": {"name": {"const": t.name},
                                                          "arguments": t.parameters},
                         "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict = {"type": "array", "items": {"anyOf": variants}}
    lo, hi = CALL_MODES[calls]
    schema["minItems"] = lo
    if hi is not None or max_calls is not None:
        schema["maxItems"] = hi if hi is not None else max_calls
    return schema
