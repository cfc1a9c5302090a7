"""``load_cases``: every category's cases, BFCL's own and the held-out others."""
from __future__ import annotations

from . import nestful
from .data import Case, bfcl_cases, check_limit, spread
from .synthetic import coordinated_cases


def load_cases(category: str, limit: int | None = None) -> list[Case]:
    """Load the cases of one category, in BFCL's order (for ``nestful`` and
    ``coordinated``: in their builders' order).

    ``limit`` picks a deterministic, evenly spread subset (indices ``i*n//limit``);
    ``None`` (or a limit ≥ the category size) loads all of them.
    """
    check_limit(limit)
    if category not in ("nestful", "coordinated"):
        return bfcl_cases(category, limit)
    cases = [Case(**d) for d in nestful.samples()] if category == "nestful" else coordinated_cases()
    return cases if limit is None else [cases[i] for i in spread(len(cases), limit)]
