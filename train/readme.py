"""README blocks written by the tools: a results table replaces what stands between
two markers, so that no number in the README is typed by hand."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from toolprm.errors import ToolprmError


def replace_block(readme: str | os.PathLike, tag: str, block: str) -> None:
    """Replace what stands between ``<!-- tag:start -->`` and ``<!-- tag:end -->`` in
    ``readme`` with ``block``, so that no number in a results table is typed by hand."""
    path = Path(readme)
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise ToolprmError(f"{path} has no {start} ... {end} block to replace")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}")


def publish(out: Path, summary: dict, table: Callable[[dict, str], str], prog: str,
            argv: list[str] | None, readme: str | None, tag: str) -> str:
    """Write a measuring tool's ``summary.json`` and ``table.md`` into ``out``, both
    naming the command (``prog`` and its arguments: ``argv``, or the process's own
    after ``toolprm bench <tool>``), print the table, and put it into ``readme``'s
    ``tag`` block where one is named. Returns the table."""
    summary["command"] = f"{prog} {shlex.join(sys.argv[2:] if argv is None else argv)}".strip()
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = table(summary, summary["command"])
    (out / "table.md").write_text(text + "\n")
    print(text)
    if readme:
        replace_block(readme, tag, text)
    return text


__all__ = ["replace_block", "publish"]
