"""The oracle scorer: a ceiling, never a default.

It reads the case's ground truth and scores a candidate 1 if every step of it so
far is right (``train.labels.step_labels``), else 0. Plugged into a search it shows
what a perfect reward model could reach with the candidates the search proposes,
so "what is left for the PRM" and "what the proposals miss" are two numbers. Only
the benchmarks use it (``--scorer oracle``), every table labels it as a ceiling,
and ``generate()`` cannot take it by name.
"""
from __future__ import annotations

from toolprm.bfcl import Case
from toolprm.errors import ToolprmError
from toolprm.train.labels import step_labels

LABEL = "oracle ceiling (reads the ground truth)"


class OracleScorer:
    """Scores with the ground truth of one case (a diagnostic)."""

    prefix_product = True  # once a step is wrong, every longer output is

    def __init__(self, case: Case):
        if not isinstance(case, Case) or (not case.ground_truth and "irrelevance" not in case.category):
            raise ToolprmError("the oracle scorer needs a BFCL case with its ground truth "
                               "(or an irrelevance case, whose truth is no call)")
        self.case = case

    def score(self, context, candidates) -> list[float]:
        out = []
        for c in candidates:
            labels = step_labels(self.case, c.events)
            out.append(float(labels[-1]) if labels else 1.0)
        return out
