"""``generate(query, tools)``: the library's front door."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from toolprm.grammar import ToolprmError, compile, normalize_tools

from .decode import Decoder, Stats
from .models import load_model
from .parse import parse_calls
from .prompts import build_prompt
from .search import (AGGREGATIONS, STRATEGIES, PolicyScorer, ScoreContext, Scorer, beam, best_of_n,
                     majority)


@dataclass
class Policy:
    """A causal LM and its tokenizer, loaded once and reused across calls."""
    model: Any
    tokenizer: Any
    name: str = "custom"


@dataclass
class Result:
    calls: list[dict] | None     # [{"name", "arguments"}]; None if unconstrained text did not parse
    text: str
    steps: list[dict] = field(default_factory=list)   # step events with their scores
    stats: dict = field(default_factory=dict)
    strategy: str = ""

    def as_dict(self) -> dict:
        return {"calls": self.calls, "text": self.text, "steps": self.steps, "stats": self.stats,
                "strategy": self.strategy}


_POLICIES: dict[str, Policy] = {}


def get_policy(model: Any = None) -> Policy:
    """``model``: None (the default SmolLM2), a name or path for load_model, a
    Policy, or a (model, tokenizer) pair."""
    if isinstance(model, Policy):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return Policy(model[0], model[1])
    if model is None or isinstance(model, str):
        key = model or "smollm2"
        if key not in _POLICIES:
            m, tok = load_model(model)
            _POLICIES[key] = Policy(m, tok, key)
        return _POLICIES[key]
    raise ToolprmError(f"model must be None, a model name/path, a Policy or a (model, tokenizer) "
                       f"pair, got {type(model).__name__}")


def _messages(query) -> list[dict]:
    if isinstance(query, str):
        return [{"role": "user", "content": query}]
    if isinstance(query, list) and all(isinstance(m, dict) and "role" in m and "content" in m
                                       for m in query):
        return query
    raise ToolprmError("query must be a string or a list of {'role', 'content'} chat messages")


def generate(query, tools, *, model=None, strategy: str = "fine_beam", calls: str = "any",
             m: int = 8, n: int = 2, temperature: float = 0.8, top_p: float = 1.0, seed: int = 0,
             max_new_tokens: int = 256, scorer: Scorer | str | None = None, aggregation: str = "min",
             on_step: Callable[[dict], None] | None = None) -> Result:
    """Call functions for ``query`` with ``tools`` (OpenAI, bare or BFCL-style specs).

    Strategies: unconstrained, greedy, sample, best_of_n, majority, coarse_beam,
    fine_beam. ``m`` samples per beam and ``n`` beams kept (fine/coarse beam);
    ``n`` samples for best_of_n and majority. ``scorer``: None (the shipped ToolPRM
    for fine_beam, coarse_beam and best_of_n), "prm", "policy" (the policy's own
    confidence) or a Scorer. ``on_step`` is called with each step
    of the answer as soon as every surviving candidate agrees on it."""
    if strategy not in STRATEGIES:
        raise ToolprmError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if aggregation not in AGGREGATIONS:
        raise ToolprmError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    for name, v in (("m", m), ("n", n), ("max_new_tokens", max_new_tokens)):
        if not isinstance(v, int) or v < 1:
            raise ToolprmError(f"{name} must be a positive integer, got {v!r}")
    policy = get_policy(model)
    norm = normalize_tools(tools)
    specs = [t.spec() for t in norm]
    messages = _messages(query)
    prompt = build_prompt(policy.tokenizer, messages, specs)
    prompt_ids = policy.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    stats = Stats()
    t0 = time.perf_counter()
    if strategy == "unconstrained":
        text = _unconstrained(policy, prompt_ids, max_new_tokens, stats)
        stats.seconds = time.perf_counter() - t0
        return Result(parse_calls(text), text, [], stats.as_dict(), strategy)

    scorer = _scorer(scorer, strategy, policy)
    grammar = compile(norm, policy.tokenizer, calls=calls)
    greedy = strategy == "greedy"
    dec = Decoder(policy.model, grammar, prompt_ids, temperature=0.0 if greedy else temperature,
                  top_p=top_p, seed=seed, max_new_tokens=max_new_tokens,
                  pad_token_id=policy.tokenizer.pad_token_id or 0,
                  want_hidden=getattr(scorer, "needs_hidden", False), stats=stats)
    ctx = ScoreContext(messages, specs, prompt_ids)
    reported = [0]

    def stream(rows):
        """Report the steps every surviving candidate agrees on: those can no longer change."""
        if on_step is None:
            return
        lists = [_steps(r) for r in rows]
        settled = 0
        while all(len(s) > settled and s[settled] == lists[0][settled] for s in lists):
            settled += 1
        for st in lists[0][reported[0]:settled]:
            on_step(st)
        reported[0] = max(reported[0], settled)

    if strategy in ("greedy", "sample"):
        best = dec.run(lambda s, ev: False)[0]
    elif strategy == "best_of_n":
        best = best_of_n(dec, ctx, n, scorer, stats)
    elif strategy == "majority":
        best = majority(dec, n)
    else:
        best = beam(dec, ctx, m, n, scorer, aggregation, stats, coarse=strategy == "coarse_beam",
                    on_step=stream)
    stream([best])
    stats.seconds = time.perf_counter() - t0
    return Result(best.state.events[-1].value, best.state.text, _steps(best), stats.as_dict(), strategy)


PRM_STRATEGIES = ("fine_beam", "coarse_beam", "best_of_n")


def _scorer(scorer, strategy: str, policy: Policy):
    """None: the shipped PRM for the strategies that rank candidates, "prm" the same,
    "policy" the policy's own confidence, or any object with a ``score`` method."""
    if scorer is None:
        scorer = "prm" if strategy in PRM_STRATEGIES else "policy"
    if scorer == "policy":
        return PolicyScorer()
    if scorer == "prm":
        from toolprm.reward import default_scorer  # reward builds on engine: import late
        return default_scorer(policy)
    if not hasattr(scorer, "score"):
        raise ToolprmError(f"scorer must be None, 'prm', 'policy' or an object with a score() "
                           f"method, got {scorer!r}")
    return scorer


def _steps(seq) -> list[dict]:
    scores = dict(seq.step_scores)
    return [{"kind": e.kind, "call": e.call, "key": e.key, "text": e.text, "offset": e.offset,
             "score": scores.get(i)} for i, e in enumerate(seq.state.events)]


@torch.inference_mode()
def _unconstrained(policy: Policy, prompt_ids: list[int], max_new_tokens: int, stats: Stats) -> str:
    """Plain greedy generation, no grammar: the baseline that shows what constraints buy."""
    ids = torch.tensor([prompt_ids])
    t0 = time.perf_counter()
    out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=policy.tokenizer.pad_token_id
                                or policy.tokenizer.eos_token_id)
    new = out[0, len(prompt_ids):].tolist()
    eos = policy.tokenizer.eos_token_id
    if eos in new:
        new = new[:new.index(eos)]
    stats.generated_tokens = len(new)
    stats.forward_passes = out.shape[1] - len(prompt_ids)  # the prefill, then one per later token
    stats.forward_seconds = time.perf_counter() - t0
    return policy.tokenizer.decode(new, skip_special_tokens=True)
