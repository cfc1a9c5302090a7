"""toolprm.bfcl: the Berkeley Function Calling Leaderboard adapter.

BFCL v4's single-turn cases, the train / test split guard, and BFCL's own AST
checker (whole outputs, one call, one parameter). A leaf: train and bench both
import it, and it imports neither.
"""
from .checker import Verdict, call_ok, check, param_ok
from .data import (CATEGORIES, IRRELEVANCE_CATEGORIES, KNOWN_UNSATISFIABLE, OTHER_CATEGORIES, TEST_CATEGORIES,
                   TRAIN_CATEGORIES, Case, assert_not_test, category_of, ground_truth_calls,
                   load_cases)

__all__ = ["TEST_CATEGORIES", "TRAIN_CATEGORIES", "CATEGORIES", "OTHER_CATEGORIES", "IRRELEVANCE_CATEGORIES",
           "KNOWN_UNSATISFIABLE", "Case", "Verdict", "load_cases", "check", "param_ok", "call_ok",
           "ground_truth_calls", "category_of", "assert_not_test"]
