"""toolprm.engine: models, prompts, the constrained decoding loop, search strategies,
and ``generate``.

The lower modules (models, prompts, decode, query, search) are imported first:
toolprm.reward builds on them, and ``api`` (imported last) builds on reward.
"""
from .models import Policy, get_policy, load_model
from .query import Query, prepare
from .search import STRATEGIES, Candidate, PolicyScorer, Scorer
from .api import Result, generate  # noqa: E402  (after the modules reward needs)

__all__ = ["generate", "Result", "Policy", "get_policy", "load_model", "prepare", "Query",
           "STRATEGIES", "Scorer", "Candidate", "PolicyScorer"]
