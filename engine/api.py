"""``generate(query, tools)``: the library's front door."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from toolprm.errors import ToolprmError
from toolprm.reward import prm as reward_prm

from .decode import Stats
from .explore import Exploration
from .models import Policy, get_policy
from .parse import parse_calls
from .query import Query, prepare
from .search import AGGREGATIONS, STRATEGIES, PolicyScorer, Scorer, Search


@dataclass
class Result:
    calls: list[dict] | None     # [{"name", "arguments"}]; None if unconstrained text did not parse
    text: str
    steps: list[dict] = field(default_factory=list)   # step events with their scores
    stats: dict = field(default_factory=dict)
    strategy: str = ""
    token_ids: list[int] = field(default_factory=list)  # the generated ids (forced ones included)

    def as_dict(self) -> dict:
        return {"calls": self.calls, "text": self.text, "steps": self.steps, "stats": self.stats,
                "strategy": self.strategy, "token_ids": self.token_ids}


def generate(query, tools, *, model=None, strategy: str = "fine_beam", calls: str = "any",
             m: int = 8, n: int = 2, temperature: float = 0.8, top_p: float = 1.0, seed: int = 0,
             max_new_tokens: int = 256, scorer: Scorer | str | None = None, aggregation: str = "last",
             exploration: str = "structured", top_k: int = 8, proposals: int = 4,
             on_step: Callable[[dict], None] | None = None) -> Result:
    """Call functions for ``query`` with ``tools`` (OpenAI, bare or BFCL-style specs).

    Strategies: the keys of ``engine.search.STRATEGIES``. ``m`` samples per beam
    and ``n`` beams kept (fine/coarse beam); ``n`` samples for best_of_n and
    majority. ``scorer``: None (the shipped ToolPRM for fine_beam, coarse_beam and
    best_of_n), "prm", "policy" (the policy's own confidence) or a Scorer.
    ``aggregation``: how a beam ranks a partial output by its step scores
    (``AGGREGATIONS``; "last" is right for the PRM's prefix products).
    ``exploration``: how fine_beam proposes a step's candidates (``engine.explore``):
    "structured" (every discrete alternative the grammar allows, the ``top_k``
    likeliest where there are more; at a free-form value ``m`` samples plus the
    ``proposals`` likeliest grounded proposals from the query) or "sampling" (``m``
    samples only). ``on_step`` is called with each step of the answer as soon as
    every surviving candidate agrees on it."""
    spec = STRATEGIES.get(strategy)
    if spec is None:
        raise ToolprmError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if aggregation not in AGGREGATIONS:
        raise ToolprmError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    for name, v in (("m", m), ("n", n), ("max_new_tokens", max_new_tokens)):
        if not isinstance(v, int) or v < 1:
            raise ToolprmError(f"{name} must be a positive integer, got {v!r}")
    explore = Exploration(exploration, top_k, proposals)
    policy = get_policy(model)
    q = prepare(policy.tokenizer, query, tools)
    stats = Stats()
    t0 = time.perf_counter()
    if spec.run is None:
        ids = _unconstrained(policy, q, max_new_tokens, stats)
        text = policy.tokenizer.decode(ids, skip_special_tokens=True)
        stats.canonical = _is_canonical(policy, text, ids)
        stats.seconds = time.perf_counter() - t0
        return Result(parse_calls(text), text, [], stats.as_dict(), strategy, ids)

    scorer = _scorer(scorer, spec.ranks, policy)
    dec = q.decoder(policy, calls, temperature=0.0 if spec.greedy else temperature, top_p=top_p,
                    seed=seed, max_new_tokens=max_new_tokens,
                    want_hidden=getattr(scorer, "needs_hidden", False), stats=stats)
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

    best = spec.run(Search(dec, q, m, n, scorer, aggregation, stats, stream, explore))
    stream([best])
    stats.canonical = _is_canonical(policy, best.state.text, best.tokens)
    stats.seconds = time.perf_counter() - t0
    return Result(best.state.events[-1].value, best.state.text, _steps(best), stats.as_dict(), strategy,
                  list(best.tokens))


def _is_canonical(policy: Policy, text: str, ids: list[int]) -> bool:
    """Whether ``ids`` are what the tokenizer itself makes of ``text``."""
    return policy.tokenizer.encode(text, add_special_tokens=False) == list(ids)


def _scorer(scorer, ranks: bool, policy: Policy):
    """None: the shipped PRM for the strategies that rank candidates, "prm" the same,
    "policy" the policy's own confidence, or any object with a ``score`` method."""
    if scorer is None:
        scorer = "prm" if ranks else "policy"
    if scorer == "policy":
        return PolicyScorer()
    if scorer == "prm":
        return reward_prm.default_scorer(policy)
    if not hasattr(scorer, "score"):
        raise ToolprmError(f"scorer must be None, 'prm', 'policy' or an object with a score() "
                           f"method, got {scorer!r}")
    return scorer


def format_trace(steps: list[dict]) -> str:
    """``Result.steps`` as aligned lines: kind, where, text, score."""
    lines = []
    for s in steps:
        score = "" if s["score"] is None else f"  score={s['score']:.3f}"
        where = f"call {s['call']}" + (f" {s['key']}" if s["key"] and s["kind"] == "value" else "")
        lines.append(f"  {s['kind']:<5} {where:<24} {s['text'][:60]}{score}")
    return "\n".join(lines)


def _steps(seq) -> list[dict]:
    scores = seq.trace.scores
    return [{"kind": e.kind, "call": e.call, "key": e.key, "text": e.text, "offset": e.offset,
             "score": scores.get(i)} for i, e in enumerate(seq.state.events)]


@torch.inference_mode()
def _unconstrained(policy: Policy, q: Query, max_new_tokens: int, stats: Stats) -> list[int]:
    """Plain greedy generation, no grammar: the baseline that shows what constraints buy."""
    ids = torch.tensor([q.prompt_ids])
    t0 = time.perf_counter()
    out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=policy.tokenizer.pad_token_id
                                or policy.tokenizer.eos_token_id)
    new = out[0, len(q.prompt_ids):].tolist()
    eos = policy.tokenizer.eos_token_id
    if eos in new:
        new = new[:new.index(eos)]
    stats.generated_tokens = len(new)
    stats.forward_passes = out.shape[1] - len(q.prompt_ids)  # the prefill, then one per later token
    stats.forward_seconds = time.perf_counter() - t0
    return new
