"""``generate(query, tools)``: the library's front door."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from toolprm.errors import GenerationCancelled, ToolprmError
from toolprm.grammar import DEFAULT_MAX_CALLS
from toolprm.reward import prm as reward_prm
from toolprm.reward.encoder import EncoderScorer

from .decode import GREEDY_BELOW, Stats
from .explore import Exploration
from .models import Policy, get_policy
from .parse import parse_calls
from .prompts import chat_prompt
from .query import Query, as_messages, prepare
from .search import AGGREGATIONS, DEFAULT_AGGREGATION, STRATEGIES, PolicyScorer, Scorer, Search


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
             max_new_tokens: int = 256, scorer: Scorer | str | None = None, aggregation: str = DEFAULT_AGGREGATION,
             exploration: str = "structured", top_k: int = Exploration.top_k,
             proposals: int = Exploration.proposals, distinct_values: bool = Exploration.distinct_values,
             close_values: bool = Exploration.close_values, distinct_calls: bool = Exploration.distinct_calls,
             on_step: Callable[[dict], None] | None = None, tool: str | None = None,
             max_calls: int = DEFAULT_MAX_CALLS, cancel=None, dtype: str | None = None) -> Result:
    """Call functions for ``query`` with ``tools`` (OpenAI, bare or BFCL-style specs).

    Strategies: the keys of ``engine.search.STRATEGIES``. ``m`` samples per beam
    and ``n`` beams kept (fine/coarse beam); ``n`` samples for best_of_n and
    majority. ``scorer``: None (the shipped ToolPRM for fine_beam, coarse_beam and
    best_of_n), a name of ``SCORERS`` ("prm", "hybrid": the head with the policy's
    confidence for values, "policy": the policy's own confidence, "minilm") or a Scorer.
    ``aggregation``: how a beam ranks a partial output by its step scores
    (``AGGREGATIONS``; default ``DEFAULT_AGGREGATION``, "last": the prefix product,
    which can stop the search early; "percall", its root by the number of calls, does
    not let a finished short list outrank a longer one just by having fewer factors).
    ``exploration``: how fine_beam proposes a step's candidates (``engine.explore``):
    "structured" (every discrete alternative the grammar allows, the ``top_k``
    likeliest where there are more; at a free-form value ``m`` samples plus the
    ``proposals`` likeliest grounded proposals from the query) or "sampling" (``m``
    samples only). ``distinct_values``: at a value step, a candidate that repeats
    another parameter's string in the same call gives way to one that does not
    (``engine.explore``). ``close_values``: a sampled value whose last token also
    commits to another key (``",``) is offered closed as well (``engine.explore``).
    ``distinct_calls``: a candidate that completes a copy of an earlier call gives
    way to a sibling that completes a different one (``engine.explore``).
    ``on_step`` is called with each step of the answer as soon as
    every surviving candidate agrees on it. ``tool``: every call must use this tool
    (the prompt still lists them all). ``max_calls``: at most this many calls.
    ``cancel``: a ``threading.Event``; once set, generation stops with
    ``GenerationCancelled``. ``dtype``: the policy's weights when ``model`` is a
    name (``engine.lean.resolve_dtype``: "auto", "float32", "bfloat16", "int4";
    None: ``$TOOLPRM_DTYPE``, else "auto"); a ``Policy`` passed as ``model``
    keeps its own. The unconstrained baseline always runs transformers in fp32."""
    spec = STRATEGIES.get(strategy)
    if spec is None:
        raise ToolprmError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if aggregation not in AGGREGATIONS:
        raise ToolprmError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    for name, v in (("m", m), ("n", n), ("max_new_tokens", max_new_tokens)):
        if not isinstance(v, int) or v < 1:
            raise ToolprmError(f"{name} must be a positive integer, got {v!r}")
    explore = Exploration(exploration, top_k, proposals, distinct_values=distinct_values,
                          close_values=close_values, distinct_calls=distinct_calls)
    policy = get_policy(model, dtype)
    q = prepare(policy.tokenizer, query, tools)
    if tool is not None:
        q = q.only(tool)
    check_context(policy, len(q.prompt_ids), max_new_tokens)
    stats = Stats(prompt_tokens=len(q.prompt_ids))
    t0 = time.perf_counter()
    if spec.run is None:
        ids = _unconstrained(policy, q, max_new_tokens, stats)
        text = policy.tokenizer.decode(ids, skip_special_tokens=True)
        stats.canonical = _is_canonical(policy, text, ids)
        stats.seconds = time.perf_counter() - t0
        return Result(parse_calls(text), text, [], stats.as_dict(), strategy, ids)

    scorer = _scorer(scorer, spec.ranks, policy)
    dec = q.decoder(policy, calls, max_calls, temperature=0.0 if spec.greedy else temperature,
                    top_p=top_p, seed=seed, max_new_tokens=max_new_tokens,
                    want_hidden=getattr(scorer, "needs_hidden", False), stats=stats, cancel=cancel)
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


def chat(query, *, model=None, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
         seed: int = 0, cancel=None) -> Result:
    """A plain-text reply to ``query`` (a string or chat messages), no tools and no
    grammar: what ``toolprm serve`` answers when no call is wanted. Sampled (seeded)
    when ``temperature`` > 0, else greedy."""
    policy = get_policy(model)
    ids = policy.tokenizer(chat_prompt(policy.tokenizer, as_messages(query)),
                           add_special_tokens=False)["input_ids"]
    check_context(policy, len(ids), max_new_tokens)
    stats = Stats(prompt_tokens=len(ids))
    t0 = time.perf_counter()
    new = _plain(policy, ids, max_new_tokens, stats, temperature=temperature, top_p=top_p, seed=seed,
                 cancel=cancel)
    text = policy.tokenizer.decode(new, skip_special_tokens=True)
    stats.canonical = _is_canonical(policy, text, new)
    stats.seconds = time.perf_counter() - t0
    return Result(None, text, [], stats.as_dict(), "chat", new)


def check_context(policy: Policy, prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse a prompt that, with the token budget, does not fit the model's context."""
    context = getattr(policy.model.config, "max_position_embeddings", None)
    if context and prompt_tokens + max_new_tokens > context:
        raise ToolprmError(f"the prompt ({prompt_tokens} tokens) plus max_new_tokens ({max_new_tokens}) "
                           f"is longer than the model's context ({context} tokens)")


def _is_canonical(policy: Policy, text: str, ids: list[int]) -> bool:
    """Whether ``ids`` are what the tokenizer itself makes of ``text``."""
    return policy.tokenizer.encode(text, add_special_tokens=False) == list(ids)


#: The scorers ``generate()`` takes by name: the shipped head, the hybrid (the head for
#: names, keys, ``[]`` and closing; the policy's confidence for values; the policy's odds
#: for closing and keys where ``reward.prm.POLICIES_READING_ENDS`` and ``_KEYS`` name it),
#: the policy's own confidence, and the cross-encoder reader (``reward.encoder``).
SCORERS = ("prm", "hybrid", "policy", "minilm")
#: What ranks the candidates of fine_beam, coarse_beam and best_of_n when no scorer is given.
DEFAULT_SCORER = "hybrid"


def _scorer(scorer, ranks: bool, policy: Policy):
    """None: the shipped PRM for the strategies that rank candidates, a name of
    ``SCORERS``, or any object with a ``score`` method."""
    if scorer is None:
        scorer = DEFAULT_SCORER if ranks else "policy"
    if scorer == "policy":
        return PolicyScorer()
    if scorer in ("prm", "hybrid"):
        return reward_prm.default_scorer(policy, values="policy" if scorer == "hybrid" else "head")
    if scorer == "minilm":
        return EncoderScorer()
    if not hasattr(scorer, "score"):
        raise ToolprmError(f"scorer must be None, one of {', '.join(map(repr, SCORERS))} or an object with "
                           f"a score() method, got {scorer!r}")
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


def _unconstrained(policy: Policy, q: Query, max_new_tokens: int, stats: Stats) -> list[int]:
    """Plain greedy generation, no grammar: the baseline that shows what constraints buy."""
    return _plain(policy, q.prompt_ids, max_new_tokens, stats)


class _Cancelled(StoppingCriteria):
    def __init__(self, cancel):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        return bool(self.cancel is not None and self.cancel.is_set())


@torch.inference_mode()
def _plain(policy: Policy, prompt_ids: list[int], max_new_tokens: int, stats: Stats, *,
           temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, cancel=None) -> list[int]:
    """transformers' own generation from ``prompt_ids`` up to EOS (greedy, or seeded sampling)."""
    ids = torch.tensor([prompt_ids])
    sampled = temperature >= GREEDY_BELOW
    if sampled:
        torch.manual_seed(seed)  # transformers samples from the global generator
    t0 = time.perf_counter()
    out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=sampled, temperature=temperature if sampled else None,
                                top_p=top_p if sampled else None, top_k=None,
                                pad_token_id=policy.tokenizer.pad_token_id or policy.tokenizer.eos_token_id,
                                stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]))
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled("generation was cancelled")
    new = out[0, len(prompt_ids):].tolist()
    eos = policy.tokenizer.eos_token_id
    if eos in new:
        new = new[:new.index(eos)]
    stats.generated_tokens = len(new)
    stats.forward_passes = out.shape[1] - len(prompt_ids)  # the prefill, then one per later token
    stats.forward_seconds = time.perf_counter() - t0
    return new
