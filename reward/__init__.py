"""toolprm.reward: the process reward model (PRM) and its checkpoint I/O.

``load_prm()`` returns the shipped PRM as a search Scorer (``needs_hidden = True``:
it reads the policy's own hidden states at each step boundary)."""
from .prm import PRM, BackbonePRM, PRMHead, PRMScorer, default_scorer, load, load_prm, save

__all__ = ["PRM", "PRMHead", "PRMScorer", "BackbonePRM", "load", "load_prm", "default_scorer",
           "save"]
