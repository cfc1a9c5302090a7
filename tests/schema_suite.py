"""The official JSON-Schema-Test-Suite (draft 2020-12) run through the grammar.

The suite ships inside the ``jsonschema`` sdist (``json/tests/draft2020-12``);
``make suite`` downloads the pinned sdist into ``.cache/sdist`` and this module
reads it straight from the tar.gz (no network here).

Each test schema becomes the single required parameter ``x`` of a tool; each test
instance, written by ``json.dumps`` as a one-call list, is walked byte by byte
through the compiled grammar. Run ``python tests/schema_suite.py`` for the figures.
"""
from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass, field

import jsonschema

from toolprm import grammar as G
from toolprm.errors import InvalidTokenError, ToolSchemaError
from toolprm.grammar.regex import FORMATS

JSONSCHEMA_SDIST_VERSION = "4.26.0"  # keep in step with the Makefile's JSONSCHEMA_SDIST
SDIST = os.path.join(os.path.dirname(__file__), "..", ".cache", "sdist",
                     f"jsonschema-{JSONSCHEMA_SDIST_VERSION}.tar.gz")
_DIR = f"jsonschema-{JSONSCHEMA_SDIST_VERSION}/json/tests/draft2020-12/"

# A vocabulary of the 256 single bytes plus EOS: the byte walk needs no tokenizer.
BYTES_VOCAB = G.Vocabulary([bytes((b,)) for b in range(256)] + [None], [256])

# jsonschema asserting the formats the grammar enforces, written out here from their
# regexes (by default jsonschema treats format as an annotation).
FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
for _name, _rx in FORMATS.items():
    FORMAT_CHECKER.checks(_name)(lambda v, rx=_rx: not isinstance(v, str) or re.fullmatch(rx, v) is not None)


def load_groups(path: str = SDIST) -> list[tuple[str, dict]]:
    """(``file/description``, group) for every group of the suite's draft 2020-12 files
    (not ``optional/``), in file order."""
    out = []
    with tarfile.open(path) as tar:
        names = sorted(m.name for m in tar.getmembers()
                       if m.name.startswith(_DIR) and m.name.endswith(".json") and "/" not in m.name[len(_DIR):])
        for name in names:
            for group in json.load(tar.extractfile(name)):
                out.append((f"{name[len(_DIR):-5]}/{group['description']}", group))
    return out


def tool_for(schema) -> dict:
    """A tool whose one required parameter ``x`` has ``schema``; the schema's $defs are
    hoisted to the parameters' root so that ``#/$defs/...`` still resolves."""
    params: dict = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    if isinstance(schema, dict):
        for key in ("$defs", "definitions"):
            if key in schema:
                params[key] = schema[key]
    return {"name": "t", "parameters": params}


def accepts(g: G.Grammar, instance) -> bool:
    text = json.dumps([{"name": "t", "arguments": {"x": instance}}]).encode()
    try:
        return g.start().advance_bytes(text).is_final
    except InvalidTokenError:
        return False


@dataclass
class SuiteResult:
    compiled: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)          # group -> error message
    invalid_accepted: list[str] = field(default_factory=list)      # "group: test description"
    valid_rejected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        n = len(self.compiled) + len(self.refused)
        return (f"{len(self.compiled)} of {n} groups compile; {len(self.invalid_accepted)} invalid "
                f"instances accepted; {len(self.valid_rejected)} valid instances rejected")


def run(lenient: bool = False) -> SuiteResult:
    res = SuiteResult()
    for gid, group in load_groups():
        try:
            g = G.compile([tool_for(group["schema"])], BYTES_VOCAB, calls="one", lenient=lenient)
        except ToolSchemaError as e:
            res.refused[gid] = str(e)
            continue
        res.compiled.append(gid)
        for test in group["tests"]:
            ok = accepts(g, test["data"])
            if ok and not test["valid"]:
                res.invalid_accepted.append(f"{gid}: {test['description']}")
            elif test["valid"] and not ok:
                res.valid_rejected.append(f"{gid}: {test['description']}")
    return res


if __name__ == "__main__":
    import sys

    r = run(lenient="--lenient" in sys.argv)
    print(r.summary())
    for title, items in (("INVALID ACCEPTED", r.invalid_accepted), ("VALID REJECTED", r.valid_rejected)):
        print(f"\n{title}")
        for x in items:
            print("  " + x)
    if "-v" in sys.argv:
        print("\nREFUSED")
        for gid, msg in r.refused.items():
            print(f"  {gid}: {msg}")
