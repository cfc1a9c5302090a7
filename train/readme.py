"""README blocks written by the tools: a results table replaces what stands between
two markers, so that no number in the README is typed by hand."""
from __future__ import annotations

import os
from pathlib import Path

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


__all__ = ["replace_block"]
