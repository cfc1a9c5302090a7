"""Rollouts: several constrained samples per query, with every step event, the
policy's hidden state where the in-loop PRM reads it, and the step's log-prob.

The decoder is driven exactly the way the fine-grained beam search drives it:
``run(stop)`` with ``stop = "any new event"``, resumed until every row is done.
So each step's hidden state and log-prob / sampled-token count are the ones the
decoder records for that event in the search (``Seq.trace``: the last-layer
state after the forward chunk that carried the event, where that was, and the
step's log-prob and sampled tokens), which the PRM scorer reads.
(A plain ``run(lambda s, ev: False)`` would append the forced glue after a
boundary in the same chunk and read the state a few tokens later than the
search does.)

``sibling_sets`` records what a beam search compares: at each step, every
candidate the search's own candidate generator proposes for one parent
(``engine.explore``: the grammar's discrete alternatives, samples and grounded
proposals), by running the search itself with one beam and a recording scorer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from toolprm.engine.explore import Exploration
from toolprm.engine.query import Query
from toolprm.engine.search import Candidate, PolicyScorer, Search, beam
from toolprm.errors import GenerationError, ToolprmError, ToolSchemaError
from toolprm.grammar import StepEvent


@dataclass
class Step:
    kind: str            # name / key / value / end
    call: int
    key: str | None
    text: str
    value: Any
    offset: int
    position: int        # index into the rollout's tokens where the hidden state was read
    logprob: float       # policy log-prob of the tokens sampled in this step
    sampled: int         # tokens sampled in this step (0: the step was forced)


@dataclass
class Rollout:
    text: str
    calls: list | None
    steps: list[Step]
    hidden: np.ndarray   # (len(steps), d) float32
    tokens: list[int] = field(default_factory=list)


def _stop_at(limit: int, max_tokens: int):
    def stop(seq, events) -> bool:
        # A step boundary, or a step that has run on for too many sampled tokens (a
        # degenerate string: "m_m_m_m..."), or a rollout past its token budget (a
        # degenerate list repeating one call); such a row is dropped after this run.
        return bool(events) or seq.trace.step_sampled >= limit or len(seq.tokens) >= max_tokens
    return stop


# Decoder headroom beyond a rollout's own budget: rollouts are cut at max_new_tokens by
# the stop function above, so the decoder's budget-closing logic is never reached.
HEADROOM = 64


@torch.inference_mode()
def rollouts(policy, query: Query, k: int, *, temperature: float = 0.8, seed: int = 0,
             max_new_tokens: int = 256, calls: str = "any", max_step_tokens: int = 32,
             empty: bool = False) -> list[Rollout]:
    """``k`` constrained samples for one prepared query (``engine.query.prepare``;
    batched: the prompt is prefilled once), and with ``empty`` one more rollout that
    answers ``[]`` (``Decoder.fork``): the empty-list decision the search offers the
    PRM, which sampling alone rarely makes.

    A rollout whose step runs past ``max_step_tokens`` sampled tokens, or whose
    output runs past ``max_new_tokens``, is cut there: its steps so far are kept
    (``calls`` is None), the unfinished step is not."""
    dec = query.decoder(policy, calls, temperature=temperature, seed=seed,
                        max_new_tokens=max_new_tokens + HEADROOM, want_hidden=True)
    dec.fork([0] * k, empty=empty)   # as the search does: the forks start at the first choice
    k = len(dec.rows)
    stop = _stop_at(max_step_tokens, max_new_tokens)
    live = list(range(k))            # rollout index of each decoder row
    final_rows: dict[int, object] = {}
    recorded = [0] * k
    steps: list[list[Step]] = [[] for _ in range(k)]
    hidden: list[list[torch.Tensor]] = [[] for _ in range(k)]
    for _ in range(10 * max_new_tokens):
        rows = dec.run(stop)
        keep = []
        for j, s in enumerate(rows):
            r = live[j]
            evs = s.state.events
            if len(evs) > recorded[r]:
                for i in range(recorded[r], len(evs)):
                    e: StepEvent = evs[i]
                    lp, n = s.trace.steps[i]   # what the search's Candidate carries for this step
                    steps[r].append(Step(e.kind, e.call, e.key, e.text, e.value, e.offset,
                                         s.trace.positions[i], lp, n))
                    hidden[r].append(s.trace.hidden[i].float().clone())
                recorded[r] = len(evs)
                s.trace.begin_step()  # the runaway-step check counts from here
                keep.append(j)
            elif s.done:
                keep.append(j)
            else:              # cut: a runaway step
                final_rows[r] = s
        for j in keep:
            final_rows[live[j]] = rows[j]
        if len(keep) < len(rows) and keep:
            dec.select(keep)
            live = [live[j] for j in keep]
        if not keep or all(s.done for s in dec.rows):
            break
    out = []
    for r in range(k):
        s = final_rows[r]
        final = s.state.events[-1].value if s.done and s.state.events else None
        h = torch.stack(hidden[r]).numpy() if hidden[r] else np.zeros((0, 0), np.float32)
        out.append(Rollout(s.state.text, final, steps[r], h, list(s.tokens)))
    return out


@dataclass
class SiblingSet:
    """The candidates a beam search scores against each other at one step: each
    extends ``parent`` (the partial output before the step) by one step."""
    parent: str
    candidates: list[Candidate]


#: How a sibling-set walk picks the parent of its next step: the candidate the
#: policy is surest of, or one at random (seeded), so later sets also follow less
#: likely, often wrong, prefixes.
FOLLOW = ("policy", "random")


class _Recorder:
    """A scorer that records every scored set and steers the walk."""

    def __init__(self, follow: str, seed: int):
        if follow not in FOLLOW:
            raise ToolprmError(f"follow must be one of {FOLLOW}, got {follow!r}")
        self.follow, self.rng = follow, random.Random(seed)
        self.parent, self.sets = "", []

    def score(self, context, candidates):
        self.sets.append(SiblingSet(self.parent, list(candidates)))
        if self.follow == "policy":
            return PolicyScorer().score(context, candidates)
        return [self.rng.random() for _ in candidates]

    def kept(self, rows) -> None:
        self.parent = rows[0].state.text


@torch.inference_mode()
def sibling_sets(policy, query: Query, *, m: int = 4, exploration: Exploration = Exploration(),
                 follow: str = "policy", temperature: float = 0.8, seed: int = 0,
                 max_new_tokens: int = 256, calls: str = "any") -> tuple[list[SiblingSet], str]:
    """One walk of fine_beam with one beam (``n=1``) over ``query``: the sibling set of
    every step that had a choice, and the output the walk ended with. The search's
    own candidate generator, forks and prompt make the sets, so they hold exactly
    what the search would compare; hidden states are kept for in-loop readers."""
    rec = _Recorder(follow, seed)
    dec = query.decoder(policy, calls, temperature=temperature, seed=seed,
                        max_new_tokens=max_new_tokens, want_hidden=True)
    best = beam(Search(dec, query, m, 1, rec, "last", dec.stats, rec.kept, exploration))
    return rec.sets, best.state.text


__all__ = ["Step", "Rollout", "rollouts", "SiblingSet", "sibling_sets", "FOLLOW", "GenerationError",
           "ToolSchemaError"]
