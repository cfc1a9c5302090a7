"""The official JSON-Schema-Test-Suite (draft 2020-12), read from the ``jsonschema`` sdist.

``make suite`` downloads the pinned sdist into ``.cache/sdist`` (git-ignored); this
module reads it straight from the tar.gz. Shared by ``tests/schema_suite.py`` (the
grammar's soundness test) and ``toolprm bench grammar --peers`` (the engines side by side).
"""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from toolprm.errors import ToolprmError

JSONSCHEMA_SDIST_VERSION = "4.26.0"  # keep in step with the Makefile's JSONSCHEMA_SDIST
SDIST_NAME = f"jsonschema-{JSONSCHEMA_SDIST_VERSION}.tar.gz"
#: Where ``make suite`` puts the sdist: the checkout's .cache/sdist.
SDIST = str(Path(__file__).resolve().parent.parent / ".cache" / "sdist" / SDIST_NAME)
_DIR = f"jsonschema-{JSONSCHEMA_SDIST_VERSION}/json/tests/draft2020-12/"


def load_groups(path: str | os.PathLike = SDIST) -> list[tuple[str, dict]]:
    """(``file/description``, group) for every group of the suite's draft 2020-12 files
    (not ``optional/``), in file order."""
    if not os.path.exists(path):
        raise ToolprmError(f"{path} does not exist: run `make suite` (downloads the jsonschema "
                           f"{JSONSCHEMA_SDIST_VERSION} sdist, which holds the JSON-Schema-Test-Suite)")
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
