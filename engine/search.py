"""Search strategies over the one decoding loop, with pluggable step scorers.

A scorer sees ``Candidate``s (a partial output at a step boundary, or a finished
one) of one ``Query`` and returns one score per candidate, higher is better (a PRM
returns P(every step so far correct)). generate() uses the shipped ToolPRM by
default for the strategies that rank (toolprm.reward); PolicyScorer, the policy's
own confidence in the step, needs no trained model.

``STRATEGIES`` is the registry: every strategy name the library, the CLI and the
benchmarks accept is a key of it.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import torch

from toolprm.grammar import State, StepEvent

from .decode import Decoder, Seq, Stats, never
from .explore import Exploration, at_free_value, closings, likeliest, plan, query_text, repeats_value
from .query import Query

#: How a partial output's step scores become the one number a beam ranks it by.
#: "last": the latest step's score — for the PRM, whose scores are prefix products
#: (P(every step so far correct)), that already covers every step, and equals "min".
#: "geomean": the score per step — for a prefix-product scorer the product's
#: ``steps``-th root, else the geometric mean of the step scores. Products fall with
#: every step, so "last" favours short finished outputs over longer ones; "geomean"
#: compares outputs of different lengths (one call against two) on equal terms.
#: "percall": the product's root by the number of calls begun, the score per call:
#: a second call must be about as good as the first to win, while ``[]`` and a
#: single call keep their plain product.
AGGREGATIONS = ("last", "min", "mean", "geomean", "percall")
#: The default, chosen by a rule stated before the run (more right on 184 live cases,
#: 48 a category; results/live-aggregation-48): "last" 38 against "percall" 36
#: (6 / 4 cases, McNemar p = 0.75). "percall" names the right number of calls on more
#: parallel queries but adds a second call to single-call ones, and costs 1.9x.
DEFAULT_AGGREGATION = "last"


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
    # (log-prob, sampled tokens) of the step, by chunk and by token (``Trace.steps``,
    # ``Trace.sibling_steps``); a PRM scores every step of the prefix.
    event_hidden: tuple = ()
    event_steps: tuple = ()
    event_sibling_steps: tuple = ()


class Scorer(Protocol):
    def score(self, context: Query, candidates: Sequence[Candidate]) -> list[float]: ...


class PolicyScorer:
    """The policy's own confidence: geometric-mean probability of the sampled tokens
    of the step (or of the whole output for a final candidate scored as an outcome)."""

    def score(self, context: Query, candidates: Sequence[Candidate]) -> list[float]:
        return [math.exp(c.step_logprob / max(1, c.step_tokens)) for c in candidates]


def candidate(seq: Seq, outcome: bool = False) -> Candidate:
    """What a scorer sees of a row: its last step, or (``outcome``) the whole output."""
    t = seq.trace
    if outcome:
        lp, n = t.logprob, max(1, len(seq.tokens))  # forced tokens count; their log-prob is 0
    else:
        lp, n = t.step_logprob, t.step_sampled
    return Candidate(seq.state.text, seq.state.events, lp, n, t.logprob, seq.hidden, seq.done,
                     tuple(t.hidden), tuple(t.steps), tuple(t.sibling_steps))


def aggregate(scores: list[float], how: str, events: Sequence[StepEvent] = (), product: bool = False) -> float:
    """One number from a partial output's recorded scores. ``events``: its steps;
    ``product``: each score is already a product over every step so far."""
    if not scores:
        return 1.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how in ("geomean", "percall"):
        logp = math.log(max(scores[-1], 1e-300)) if product else sum(math.log(max(sc, 1e-300)) for sc in scores)
        if how == "geomean":
            return math.exp(logp / (max(1, len(events)) if product else len(scores)))
        return math.exp(logp / max(1, sum(e.kind == "name" for e in events)))
    return sum(scores) / len(scores)


def normalized_calls(seq: Seq) -> str:
    """Order-insensitive key of a complete call list, for voting."""
    calls = seq.state.events[-1].value if seq.done else []
    return json.dumps(sorted(json.dumps(c, sort_keys=True) for c in calls))


@dataclass
class Search:
    """What a strategy runs on: the decoder (prompt prefilled), the query, the
    widths, the scorer and where to report."""
    dec: Decoder
    query: Query
    m: int
    n: int
    scorer: Scorer
    aggregation: str
    stats: Stats
    on_step: Callable[[list[Seq]], None] | None = None
    exploration: Exploration = Exploration()

    def score(self, rows: list[Seq], outcome: bool = False) -> list[float]:
        """Score ``rows`` (their last step, or the whole output) and record each score
        on its row's last event."""
        t0 = time.perf_counter()
        scores = [float(sc) for sc in self.scorer.score(self.query, [candidate(s, outcome) for s in rows])]
        self.stats.scorer_seconds += time.perf_counter() - t0
        self.stats.scorer_calls += len(rows)
        for s, sc in zip(rows, scores):
            s.trace.scores[len(s.state.events) - 1] = sc
        return scores


def decode_all(search: Search) -> Seq:
    """One row decoded to the end (greedy or sampled, by the decoder's temperature)."""
    return search.dec.run(never)[0]


def sample_all(search: Search, k: int) -> list[Seq]:
    search.dec.fork([0] * k)
    return search.dec.run(never)


def best_of_n(search: Search) -> Seq:
    """``n`` complete samples; the one the scorer ranks highest as a whole output."""
    rows = sample_all(search, search.n)
    scores = search.score(rows, outcome=True)
    return rows[max(range(len(rows)), key=lambda i: scores[i])]


def majority(search: Search) -> Seq:
    """``n`` complete samples; the most frequent call list (order-insensitive), ties
    going to the likeliest sample."""
    rows = sample_all(search, search.n)
    votes = Counter(normalized_calls(s) for s in rows)
    best = max(votes.values())
    winners = [s for s in rows if votes[normalized_calls(s)] == best]
    return max(winners, key=lambda s: s.trace.logprob)


def beam(search: Search, coarse: bool = False) -> Seq:
    """Fine-grained (each name/key/value is a step) or coarse (each call is a step)
    beam search: every live beam is expanded into its candidates for the next step
    (``engine.explore``: the discrete alternatives the grammar allows, or ``m``
    samples plus grounded proposals; with sampling-only exploration, ``m`` samples),
    each runs to its next step boundary, the candidates are scored, and the best
    ``n`` partial outputs are kept. The first step always offers ``[]`` where the
    grammar allows no call: a small policy rarely samples it, so without it the
    scorer could never choose to call nothing.

    A finished call list leaves the beam for a pool (as in textbook beam search): it
    no longer holds one of the ``n`` slots, and longer outputs that outscore it for
    a while cannot push it out. The best finished output is returned. Where a
    partial output's score can only fall as it grows (``monotone``: "min", or "last"
    over a scorer of prefix products such as the PRM's), the search stops as soon as
    the best finished output (``[]`` in the beam included) scores at least as high
    as every live one: no live one can overtake it. ``[]`` stays in the beam instead, where it must keep a slot
    against the live outputs of each round: pooled, its one-step score would be set
    against whole call lists' products, whose every further step lowers them (on
    live queries the pool then answered ``[]`` to 27 of 64 relevant ones)."""
    dec, m, ex = search.dec, search.m, search.exploration
    if coarse:  # a step is a whole call: its candidates are samples
        ex = Exploration("sampling")
    query = query_text(search.query.messages)
    marks: dict[int, int] = {}

    def stop(seq: Seq, events) -> bool:
        if coarse:
            return seq.state.calls_closed > marks.get(id(seq), 0) or seq.done
        return bool(events)

    product = getattr(search.scorer, "prefix_product", False)
    monotone = search.aggregation == "min" or (search.aggregation == "last" and product)

    def rank(seq: Seq) -> tuple[float, float]:
        return (aggregate(seq.trace.score_list(), search.aggregation, seq.state.events, product),
                seq.trace.logprob)

    best_done: Seq | None = None
    dec.select([0])
    first = True
    while True:
        dec.feed_forced()  # once per parent, before forking it into its candidates
        parents = list(dec.rows)
        # Read now: a parent's row object is reused by one of its candidates, whose
        # state the run below moves on (it may end the list).
        was_done = [s.done for s in parents]
        had_events = [len(s.state.events) for s in parents]
        for s in parents:
            if not s.done:
                s.trace.begin_step()
        plans = [plan(dec, i, m, ex, query) for i in range(len(parents))]
        items = [(i, toks) for i, (_, conts, _) in enumerate(plans) for toks in conts]
        added = dec.extend(items, stop)  # chosen alternatives, after the parents
        parent_at = dict(zip(added, (i for i, _ in items)))
        added = likeliest(dec, added, [i for i, _ in items], {i: p[2] for i, p in enumerate(plans)})
        picks = [i for i, (k, _, _) in enumerate(plans) for _ in range(k)]
        parent_of = picks + [parent_at[r] for r in added]
        # A copy of each parent that samples a value waits, to offer its values closed.
        held = [i for i, (k, _, _) in enumerate(plans) if k and at_free_value(parents[i].state)] \
            if ex.close_values and not coarse else []
        if first and ex.mode == "sampling":
            if dec.fork(picks + added, empty=True):  # one more row that answers []
                parent_of.append(0)
        else:
            dec.select(picks + added + held)
        first = False
        marks = {id(s): s.state.calls_closed for s in dec.rows}
        rows = dec.run(stop, hold=len(parent_of))
        if held:
            closed = closed_values(dec, stop, parent_of, len(picks), held)
            search.stats.values_closed += len(closed)
            parent_of += closed
            rows = dec.rows
        # set this round for a row that ended on a repeated call: such a row is pooled
        repeated = [s.repeated_call for s in rows] if ex.distinct_calls and not coarse else None
        keep, to_score = merge_candidates([s.state for s in rows], [s.trace.logprob for s in rows],
                                          parent_of, [was_done[p] for p in parent_of], repeated)
        if ex.distinct_values and not coarse:
            repeats = {i: repeats_value(rows[i].state.events, had_events[parent_of[i]]) for i in keep}
            keep, to_score, dropped = without_repeats(keep, to_score, repeats, parent_of)
            search.stats.repeats_dropped += dropped
        if repeated is not None:
            keep, to_score, dropped = without_repeats(keep, to_score, repeated, parent_of)
            search.stats.calls_dropped += dropped
        if to_score:
            search.score([rows[i] for i in to_score])
        ranked = sorted(keep, key=lambda i: rank(rows[i]), reverse=True)
        pooled = [i for i in ranked if rows[i].done and rows[i].state.events[-1].value]
        for i in pooled:
            if best_done is None or rank(rows[i]) > rank(best_done):
                best_done = rows[i]
        beam_rows = [i for i in ranked if i not in pooled][:search.n]  # live rows, and [] if it holds a slot
        live = [i for i in beam_rows if not rows[i].done]
        done = [rows[i] for i in beam_rows if rows[i].done] + ([best_done] if best_done is not None else [])
        if live and done and monotone and max(rank(d)[0] for d in done) >= rank(rows[live[0]])[0]:
            live = []  # no live output can score above the best finished one ([] included) any more
        if not live:
            return max(done + [rows[i] for i in beam_rows], key=rank)
        dec.select(beam_rows)
        if search.on_step is not None:
            search.on_step(dec.rows + ([best_done] if best_done is not None else []))


def closed_values(dec: Decoder, stop, parent_of: list[int], sampled: int, held: list[int]) -> list[int]:
    """``Exploration.close_values``: after a round's run, where the rows from
    ``len(parent_of)`` on are waiting copies of the parents ``held`` and the first
    ``sampled`` rows are samples, add for each distinct sampled value that committed
    to another key (``closings``) the same value closed the likeliest way, spelled
    canonically from the parent and read by the policy; drop the waiting copies.
    Returns the parents of the rows added (after the others)."""
    base = len(parent_of)
    waiting = {p: base + j for j, p in enumerate(held)}  # parent -> its waiting copy's row
    items, groups, seen = [], [], set()  # a group: (parent, one distinct value of its samples)
    for r in range(sampled):
        p = parent_of[r]
        got = closings(dec.rows[waiting[p]].state, dec.rows[r].state) if p in waiting else None
        if got is None or (p, got[0]) in seen:
            continue
        seen.add((p, got[0]))
        for alt in got[1]:
            toks = dec.grammar.vocab.canonical(got[0] + alt)
            if dec.room_for(waiting[p], toks):
                items.append((waiting[p], toks))
                groups.append((p, got[0]))
    added = dec.extend(items, stop) if items else []
    kept = likeliest(dec, added, groups, {g: 1 for g in groups})
    dec.select(list(range(base)) + kept)
    dec.settle()  # only the kept ones are fed
    group_of = dict(zip(added, groups))
    return [group_of[r][0] for r in kept]


def output_key(st: State) -> tuple:
    """What tells two partial outputs apart at a step boundary: each call's name and
    its arguments as an unordered set of (key, value text), the key awaiting its
    value, whether the list is closed, and the text after the last step with what
    the grammar forces next. JSON objects are unordered, so a call whose arguments
    were written in another order is the same call to the checker and to any JSON
    reader, and its completions are the same: traced on parallel_12, a second beam
    that only reordered the first call's keys took the slot of the second call."""
    calls: list[tuple[str, dict]] = []
    pending = None
    for e in st.events:
        if e.kind == "name":
            calls.append((e.text, {}))
        elif e.kind == "value":
            calls[e.call][1][e.key] = e.text
        pending = e.key if e.kind == "key" else None
    last = st.events[-1].offset if st.events else 0
    tail = st.text[last:].encode() + st.forced_bytes()
    return (tuple((name, tuple(sorted(args.items()))) for name, args in calls), pending,
            bool(st.events) and st.events[-1].kind == "end", tail)


def merge_candidates(states: Sequence[State], logprobs: Sequence[float], parent_of: Sequence[int],
                     parent_done: Sequence[bool],
                     repeated: Sequence[bool] | None = None) -> tuple[list[int], list[int]]:
    """Of one round's candidates: (the indices kept, one per distinct partial output,
    the likeliest copy; those of them to score).

    Outputs equal up to what the grammar forces next (`5}` and `5}}`, where the
    call's `}` is bound to follow) or up to the order of a call's arguments
    (``output_key``) are one, so copies do not fill the beam. A step is
    scored only where its parent had a choice: a parent whose candidates all agree
    had one. Each parent's distinct children are counted before copies merge, since
    two parents can propose the same output and the copy kept may be the other's.

    ``repeated`` (``Exploration.distinct_calls``): a list that ended on a repeated
    call reads as the list closed before it, so it can be a copy of another parent's
    plain close. That copy is kept over it whatever their log-probs: the repeat is
    then dropped (``without_repeats``) without taking the close with it."""
    key = [output_key(st) for st in states]
    plain = [not r for r in repeated] if repeated is not None else [True] * len(states)
    unique: dict[tuple, int] = {}
    for i, k in enumerate(key):
        j = unique.get(k)
        if j is None or (plain[i], logprobs[i]) > (plain[j], logprobs[j]):
            unique[k] = i
    keep = sorted(unique.values())
    children: dict[int, set[tuple]] = {}
    for i, k in enumerate(key):
        if not parent_done[i]:
            children.setdefault(parent_of[i], set()).add(k)
    chosen = set().union(*(c for c in children.values() if len(c) > 1))
    return keep, [i for i in keep if key[i] in chosen]


def without_repeats(keep: list[int], to_score: list[int], repeats: Mapping[int, bool] | Sequence[bool],
                    parent_of: Sequence[int]) -> tuple[list[int], list[int], int]:
    """``keep`` and ``to_score`` without the candidates that repeat something
    (``repeats``, read for the kept ones: another parameter's value,
    ``Exploration.distinct_values``, or an earlier call, ``distinct_calls``) where
    their parent has a kept candidate that does not; and how many were dropped."""
    clean = {parent_of[i] for i in keep if not repeats[i]}
    drop = {i for i in keep if repeats[i] and parent_of[i] in clean}
    return [i for i in keep if i not in drop], [i for i in to_score if i not in drop], len(drop)


@dataclass(frozen=True)
class Strategy:
    """A registry entry. ``run`` is None for the unconstrained baseline (plain
    generation, no grammar); ``ranks``: the shipped PRM is its default scorer;
    ``greedy``: it decodes at temperature 0."""
    run: Callable[[Search], Seq] | None
    ranks: bool = False
    greedy: bool = False
    doc: str = ""


STRATEGIES: dict[str, Strategy] = {
    "unconstrained": Strategy(None, doc="plain greedy generation, parsed afterwards (the baseline)"),
    "greedy": Strategy(decode_all, greedy=True, doc="constrained greedy decoding"),
    "sample": Strategy(decode_all, doc="one constrained sample"),
    "best_of_n": Strategy(best_of_n, ranks=True, doc="n samples, the best-scored whole output"),
    "majority": Strategy(majority, doc="n samples, the most frequent call list"),
    "coarse_beam": Strategy(lambda s: beam(s, coarse=True), ranks=True,
                            doc="beam search where a whole call is one step"),
    "fine_beam": Strategy(beam, ranks=True, doc="beam search where each name, key and value is a step"),
}
