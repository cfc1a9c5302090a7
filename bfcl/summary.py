"""BFCL's Non-Live AST summary, computed the way BFCL computes it.

Taken from ``bfcl_eval/eval_checker/eval_runner_helper.py``,
``generate_leaderboard_csv`` (the "Non-Live" rows), with
``calculate_unweighted_accuracy`` for every mean:

* a category's accuracy is correct / total (``save_eval_results``);
* Simple AST   = mean(simple_python, simple_java, simple_javascript);
* AST Summary  = mean(Simple AST, multiple, parallel, parallel_multiple) — the
  "Non-Live AST" figure leaderboard rows quote;
* Irrelevance Detection is its own column, in neither mean.

Every mean is unweighted: a category of 50 cases weighs as much as one of 400.
A category that was not run counts as 0 in BFCL's arithmetic and makes the mean
display "N/A" (``get_category_score``); here such a mean is None.

``python_only`` is this project's older figure, the mean of simple_python,
multiple, parallel and parallel_multiple: not BFCL's, kept under its own label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from toolprm.errors import ToolprmError

SIMPLE: tuple[str, ...] = ("simple_python", "simple_java", "simple_javascript")
#: The other three members of the AST Summary, beside Simple AST.
AST_OTHERS: tuple[str, ...] = ("multiple", "parallel", "parallel_multiple")
PYTHON_ONLY: tuple[str, ...] = ("simple_python",) + AST_OTHERS
NON_LIVE: tuple[str, ...] = SIMPLE + AST_OTHERS + ("irrelevance",)


@dataclass(frozen=True)
class NonLiveSummary:
    """Accuracies as fractions (0..1); None where BFCL would show "N/A"."""

    accuracy: dict[str, float | None]  # each of NON_LIVE
    simple: float | None               # BFCL's "Simple AST"
    non_live_ast: float | None         # BFCL's "AST Summary" (Non-Live AST)
    python_only: float | None          # not BFCL's: simple_python, multiple, parallel, parallel_multiple
    irrelevance: float | None          # beside the summary, not in it
    missing: tuple[str, ...]           # categories of NON_LIVE without counts

    def rows(self) -> list[tuple[str, float | None]]:
        """(label, accuracy) in BFCL's column order, with BFCL's column names."""
        a = self.accuracy
        return [("AST Summary (Non-Live AST)", self.non_live_ast), ("Simple AST", self.simple),
                ("Python Simple AST", a["simple_python"]), ("Java Simple AST", a["simple_java"]),
                ("JavaScript Simple AST", a["simple_javascript"]), ("Multiple AST", a["multiple"]),
                ("Parallel AST", a["parallel"]), ("Parallel Multiple AST", a["parallel_multiple"]),
                ("Irrelevance Detection", self.irrelevance),
                ("Python-only non-live mean (not BFCL's)", self.python_only)]


def non_live_summary(counts: Mapping[str, tuple[int, int]]) -> NonLiveSummary:
    """BFCL's Non-Live summary from ``{category: (correct, total)}``.

    Categories outside NON_LIVE (live ones, other benchmarks) are ignored."""
    accuracy: dict[str, float | None] = {}
    for category in NON_LIVE:
        if category not in counts:
            accuracy[category] = None
            continue
        correct, total = counts[category]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (correct, total)) \
                or total <= 0 or not 0 <= correct <= total:
            raise ToolprmError(f"{category}: counts must be integers with 0 <= correct <= total "
                               f"and total > 0, got ({correct!r}, {total!r})")
        accuracy[category] = correct / total
    simple = _mean([accuracy[c] for c in SIMPLE])
    return NonLiveSummary(
        accuracy=accuracy,
        simple=simple,
        non_live_ast=_mean([simple] + [accuracy[c] for c in AST_OTHERS]),
        python_only=_mean([accuracy[c] for c in PYTHON_ONLY]),
        irrelevance=accuracy["irrelevance"],
        missing=tuple(c for c in NON_LIVE if accuracy[c] is None),
    )


def ast_summary_weights() -> dict[str, float]:
    """Each category's weight in BFCL's AST Summary as a plain weighted mean (the
    Simple categories a third each, as Simple AST is their mean), for intervals."""
    return {**{c: 1 / len(SIMPLE) for c in SIMPLE}, **{c: 1.0 for c in AST_OTHERS}}


def _mean(values: list[float | None]) -> float | None:
    """``calculate_unweighted_accuracy``: the plain mean, "N/A" (None) if any is missing."""
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)
