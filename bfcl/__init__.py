"""toolprm.bfcl: the Berkeley Function Calling Leaderboard adapter.

BFCL v4's single-turn cases (and held-out others in its form: NESTFUL's, and
multi-call queries built from held-out live ones), the train / test split guard
and the held-out split, BFCL's own AST
checker (whole outputs, one call, one parameter) and its Non-Live AST summary.
A leaf: train and bench both import it, and it imports neither.
"""
from .cases import load_cases
from .checker import Verdict, call_ok, check, param_ok
from .data import (CATEGORIES, IRRELEVANCE_CATEGORIES, KNOWN_UNSATISFIABLE, LANGUAGE_CATEGORIES, OTHER_CATEGORIES,
                   TEST_CATEGORIES, TRAIN_CATEGORIES, Case, assert_not_test, category_of, ground_truth_calls,
                   held_out, language_of, split_of)
from .summary import NonLiveSummary, non_live_summary

__all__ = ["TEST_CATEGORIES", "TRAIN_CATEGORIES", "CATEGORIES", "LANGUAGE_CATEGORIES", "OTHER_CATEGORIES",
           "IRRELEVANCE_CATEGORIES", "KNOWN_UNSATISFIABLE", "Case", "Verdict", "load_cases", "check", "param_ok",
           "call_ok", "ground_truth_calls", "category_of", "language_of", "assert_not_test", "held_out", "split_of", "NonLiveSummary",
           "non_live_summary"]
