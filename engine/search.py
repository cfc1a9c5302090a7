"""Search strategies over the one decoding loop, with pluggable step scorers.

A scorer sees ``Candidate``s (a partial output at a step boundary, or a finished
one) and returns one score per candidate, higher is better (a PRM returns
P(last step correct)). generate() uses the shipped ToolPRM by default
(toolprm.reward); PolicyScorer, the policy's own confidence in the step, needs no
trained model.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from toolprm.grammar import StepEvent

from .decode import Decoder, Seq, _never

STRATEGIES = ("unconstrained", "greedy", "sample", "best_of_n", "majority", "coarse_beam", "fine_beam")
AGGREGATIONS = ("last", "min", "mean")


@dataclass
class ScoreContext:
    """What every candidate of one query shares."""
    messages: list[dict]
    tools: list[dict]          # normalized bare specs
    prompt_ids: list[int]


@dataclass
class Candidate:
    text: str                  # the partial (or complete) output
    events: tuple[StepEvent, ...]
    step_logprob: float        # policy log-prob of the tokens sampled in this step
    step_tokens: int
    logprob: float             # over the whole output so far
    hidden: torch.Tensor | None
    final: bool
    # Per event (same order as ``events``): the hidden state where that step ended and
    # (log-prob, sampled tokens) of the step; a PRM scores every step of the prefix.
    event_hidden: tuple = ()
    event_steps: tuple = ()


class Scorer(Protocol):
    def score(self, context: ScoreContext, candidates: Sequence[Candidate]) -> list[float]: ...


class PolicyScorer:
    """The policy's own confidence: geometric-mean probability of the sampled tokens
    of the step (or of the whole output for a final candidate scored as an outcome)."""

    def score(self, context: ScoreContext, candidates: Sequence[Candidate]) -> list[float]:
        return [math.exp(c.step_logprob / max(1, c.step_tokens)) for c in candidates]


def candidate(seq: Seq, outcome: bool = False) -> Candidate:
    if outcome:
        n = sum(1 for _ in seq.tokens)  # includes forced tokens; their logprob is 0
        return Candidate(seq.state.text, seq.state.events, seq.logprob, max(1, n), seq.logprob,
                         seq.hidden, seq.done, tuple(seq.event_hidden), tuple(seq.event_steps))
    return Candidate(seq.state.text, seq.state.events, seq.step_logprob, seq.step_sampled,
                     seq.logprob, seq.hidden, seq.done, tuple(seq.event_hidden), tuple(seq.event_steps))


def aggregate(scores: list[float], how: str) -> float:
    if not scores:
        return 1.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    return sum(scores) / len(scores)


def normalized_calls(seq: Seq) -> str:
    """Order-insensitive key of a complete call list, for voting."""
    calls = seq.state.events[-1].value if seq.done else []
    return json.dumps(sorted(json.dumps(c, sort_keys=True) for c in calls))


def _reset_step(s: Seq) -> None:
    s.step_logprob = 0.0
    s.step_sampled = 0


def sample_all(dec: Decoder, k: int) -> list[Seq]:
    dec.feed_forced()
    dec.select([0] * k)
    return dec.run(_never)


def best_of_n(dec: Decoder, ctx: ScoreContext, n: int, scorer: Scorer, stats) -> Seq:
    rows = sample_all(dec, n)
    scores = scorer.score(ctx, [candidate(s, outcome=True) for s in rows])
    stats.scorer_calls += len(rows)
    for s, sc in zip(rows, scores):
        s.scores.append(sc)
        s.step_scores.append((len(s.state.events) - 1, sc))
    return rows[max(range(len(rows)), key=lambda i: scores[i])]


def majority(dec: Decoder, n: int) -> Seq:
    rows = sample_all(dec, n)
    votes = Counter(normalized_calls(s) for s in rows)
    best = max(votes.values())
    winners = [s for s in rows if votes[normalized_calls(s)] == best]
    return max(winners, key=lambda s: s.logprob)


def beam(dec: Decoder, ctx: ScoreContext, m: int, n: int, scorer: Scorer, agg: str, stats,
         coarse: bool = False, on_step: Callable | None = None, explore_empty: bool = True) -> Seq:
    """Fine-grained (each name/key/value is a step) or coarse (each call is a step)
    beam search: every live beam is expanded into ``m`` samples to its next step
    boundary, the samples are scored, and the best ``n`` partial outputs are kept.
    With ``explore_empty`` the first step also offers ``[]`` (where the grammar allows
    no call), scored like the samples: a small policy rarely samples it, so without
    it the scorer could never choose to call nothing."""
    marks: dict[int, int] = {}

    def stop(seq: Seq, events) -> bool:
        if coarse:
            return seq.state.calls_closed > marks.get(id(seq), 0) or seq.done
        return bool(events)

    dec.select([0])
    first = True
    while True:
        dec.feed_forced()  # once per parent, before forking it into m rows
        parents = dec.rows
        picks, parent_of = [], []
        for i, s in enumerate(parents):
            for _ in range(1 if s.done else m):
                picks.append(i)
                parent_of.append(i)
        if first and explore_empty:  # one more row that answers [], for the scorer to weigh
            dec.select(picks + [0])
            if dec.close_list(len(picks)):
                parent_of.append(0)
            else:
                dec.select(list(range(len(picks))))
        else:
            dec.select(picks)
        first = False
        for s in dec.rows:
            if not s.done:
                _reset_step(s)
            marks[id(s)] = s.state.calls_closed
        rows = dec.run(stop)
        # One candidate per distinct partial output (keep the likeliest copy).
        unique: dict[bytes, int] = {}
        for i, s in enumerate(rows):
            j = unique.get(s.state.raw)
            if j is None or s.logprob > rows[j].logprob:
                unique[s.state.raw] = i
        keep = sorted(unique.values())
        # A parent whose samples all agree had a single choice: that step is not scored.
        children: dict[int, list[int]] = {}
        for i in keep:
            children.setdefault(parent_of[i], []).append(i)
        to_score = [i for i in keep if len(children[parent_of[i]]) > 1 and not parents[parent_of[i]].done]
        if to_score:
            scores = scorer.score(ctx, [candidate(rows[i]) for i in to_score])
            stats.scorer_calls += len(to_score)
            for i, sc in zip(to_score, scores):
                rows[i].scores.append(float(sc))
                rows[i].step_scores.append((len(rows[i].state.events) - 1, float(sc)))
        ranked = sorted(keep, key=lambda i: (aggregate(rows[i].scores, agg), rows[i].logprob), reverse=True)
        survivors = ranked[:n]
        dec.select(survivors)
        if on_step is not None:
            on_step(dec.rows)
        if all(s.done for s in dec.rows):
            return dec.rows[0]
