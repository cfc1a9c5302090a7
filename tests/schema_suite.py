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
import re
from dataclasses import dataclass, field

import jsonschema

from toolprm import grammar as G
from toolprm.errors import InvalidTokenError, ToolSchemaError
from toolprm.bench import suite
from toolprm.bench.suite import JSONSCHEMA_SDIST_VERSION, load_groups, tool_for  # noqa: F401 (re-exported)
from toolprm.grammar.regex import FORMATS

SDIST = suite.SDIST

# A vocabulary of the 256 single bytes plus EOS: the byte walk needs no tokenizer.
BYTES_VOCAB = G.Vocabulary([bytes((b,)) for b in range(256)] + [None], [256])

# jsonschema asserting the formats the grammar enforces, written out here from their
# regexes (by default jsonschema treats format as an annotation).
FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
for _name, _rx in FORMATS.items():
    FORMAT_CHECKER.checks(_name)(lambda v, rx=_rx: not isinstance(v, str) or re.fullmatch(rx, v) is not None)


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
