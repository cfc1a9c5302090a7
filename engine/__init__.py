"""toolprm.engine: models, prompts, the constrained decoding loop, search strategies."""
from .api import Policy, Result, generate, get_policy
from .models import load_model
from .search import STRATEGIES, Candidate, PolicyScorer, ScoreContext, Scorer

__all__ = ["generate", "Result", "Policy", "get_policy", "load_model", "STRATEGIES", "Scorer",
           "ScoreContext", "Candidate", "PolicyScorer"]
