"""The batched, grammar-constrained decoding loop.

One ``Decoder`` owns one prompt: the prompt is prefilled once and every candidate
forks from its KV cache (held by a runner, ``engine.runners``). Rows of the batch are ``Seq``s; each carries its grammar
state. A tick feeds every row its pending tokens in one forward pass (rows with
fewer pending tokens are left-padded inside the chunk and the padding is masked
out), then samples the next token of every row from the grammar-masked logits and
appends the forced continuation after it (jump-forward), so one forward pass can
carry several tokens of a row.

Search strategies drive it with ``run(stop)``: rows decode until ``stop(seq,
events)`` says a step boundary was reached (or the output is complete), then the
strategy scores, forks (``select``) and runs again.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from toolprm.errors import GenerationCancelled, GenerationError, InvalidTokenError
from toolprm.grammar import State, StepEvent

from .runners import runner_for

_CLOSERS = frozenset(b'"]} ')

# Close the output once its shortest completion is within this many tokens of the
# budget: one sampled token can lengthen the completion by several tokens. A budget
# under 128 tokens gets an eighth of itself, so a small budget still fits a call.
CLOSE_MARGIN = 16


def close_margin(max_new_tokens: int) -> int:
    return min(CLOSE_MARGIN, max(2, max_new_tokens // 8))


@dataclass
class Stats:
    prompt_tokens: int = 0
    generated_tokens: int = 0   # tokens chosen by sampling
    forced_tokens: int = 0      # tokens appended by jump-forward or budget closing
    chosen_tokens: int = 0      # tokens of alternatives a strategy chose (enumerated, proposed)
    forward_passes: int = 0
    fed_slots: int = 0          # rows x chunk width summed over decoding passes (padding included)
    scorer_calls: int = 0
    repeats_dropped: int = 0    # candidates dropped for repeating another parameter's value (engine.explore)
    calls_dropped: int = 0      # candidates dropped for repeating an earlier call (engine.explore, distinct_calls)
    values_closed: int = 0      # sampled values also offered closed (engine.explore, close_values)
    scorer_seconds: float = 0.0  # in the scorer (a reader with its own forward pass: most of it)
    grammar_seconds: float = 0.0
    forward_seconds: float = 0.0
    kv_written_bytes: int = 0   # bytes written into the KV cache (feeds and forks; engine.runners)
    kv_peak_bytes: int = 0      # the most bytes the KV cache held
    seconds: float = 0.0
    canonical: bool | None = None  # the output's ids are the tokenizer's own encoding of its text

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Trace:
    """What the search and a PRM read of one row's steps (one entry per grammar event).

    For each event: ``positions`` — the index in the row's tokens of the last token
    of the forward chunk that carried it, where its hidden state was taken;
    ``hidden`` — that last-layer state (when the decoder keeps hidden states);
    ``steps`` — (log-prob, sampled tokens) of the tokens sampled since the previous
    event's chunk (events of one chunk share them; what the PRM head was trained on);
    ``sibling_steps`` — the same counted token by token, a token going to the first
    event that ends at or after it, so one that straddles a boundary (``",`` ends a
    value and chooses another key) counts for the later step: two siblings that part
    inside a token are then measured from the same place, whether their tokens came
    one by one or in one chunk (``Decoder.extend``). ``scores``: the scorer's verdict
    per scored event, by event index — the one score record. ``logprob`` sums over
    every sampled token; ``step_logprob`` and ``step_sampled`` count since the
    strategy last called ``begin_step``.
    """
    positions: list[int] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)
    steps: list[tuple[float, int]] = field(default_factory=list)
    sibling_steps: list[tuple[float, int]] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    logprob: float = 0.0
    step_logprob: float = 0.0
    step_sampled: int = 0
    since_logprob: float = 0.0
    since_sampled: int = 0
    token_since: tuple[float, int] = (0.0, 0)

    def copy(self) -> "Trace":
        return replace(self, positions=list(self.positions), hidden=list(self.hidden),
                       steps=list(self.steps), sibling_steps=list(self.sibling_steps),
                       scores=dict(self.scores))

    def chosen(self, logprob: float) -> None:
        """Count one token chosen by the policy."""
        self.logprob += logprob
        self.step_logprob += logprob
        self.step_sampled += 1
        self.since_logprob += logprob
        self.since_sampled += 1

    def begin_step(self) -> None:
        self.step_logprob, self.step_sampled = 0.0, 0

    def token(self, logprob: float | None, offsets: list[int], end: int) -> None:
        """For ``sibling_steps``: one token, ending at character ``end``, that ended
        events at ``offsets`` (``logprob`` None: forced, not counted)."""
        inner = sum(o < end for o in offsets)  # ended inside the token: it goes on
        if inner:
            self.sibling_steps.extend([self.token_since] * inner)
            self.token_since = (0.0, 0)
        if logprob is not None:
            self.token_since = (self.token_since[0] + logprob, self.token_since[1] + 1)
        if len(offsets) > inner:
            self.sibling_steps.extend([self.token_since] * (len(offsets) - inner))
            self.token_since = (0.0, 0)

    def close_events(self, n_events: int) -> None:
        """The row now has ``n_events`` events: the new ones share the sampled tokens
        counted since the last event."""
        if len(self.steps) < n_events:
            self.steps.extend([(self.since_logprob, self.since_sampled)] * (n_events - len(self.steps)))
            self.since_logprob, self.since_sampled = 0.0, 0
        if len(self.sibling_steps) < n_events:  # events of a respelled ending (``_respell``)
            self.sibling_steps.extend([self.token_since] * (n_events - len(self.sibling_steps)))
            self.token_since = (0.0, 0)

    def truncate(self, n_events: int) -> None:
        """Forget every event from index ``n_events`` on (a dropped repeated call)."""
        del self.positions[n_events:], self.hidden[n_events:], self.steps[n_events:], \
            self.sibling_steps[n_events:]
        self.scores = {i: sc for i, sc in self.scores.items() if i < n_events}

    def score_list(self) -> list[float]:
        return [self.scores[i] for i in sorted(self.scores)]


@dataclass
class Seq:
    """One candidate output: a row of the batch, and the trace of its steps."""
    state: State
    tokens: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)   # chosen, not yet fed to the model
    next_logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None                 # last-layer state after the last fed token
    n_events: int = 0                                  # events already reported to stop()
    stopped: bool = False                              # reached a boundary; waits for the strategy
    stop_after_feed: bool = False
    call_ends: list[State] = field(default_factory=list)  # the state after each complete call
    repeated_call: bool = False                        # its list ended where it repeated a call
    trace: Trace = field(default_factory=Trace)

    @property
    def done(self) -> bool:
        return self.state.is_final

    def fork(self) -> "Seq":
        return replace(self, tokens=list(self.tokens), pending=list(self.pending),
                       call_ends=list(self.call_ends), trace=self.trace.copy())


StopFn = Callable[[Seq, tuple[StepEvent, ...]], bool]


def never(seq, events) -> bool:
    """A stop function that never stops a row before its output is complete."""
    return False


class Decoder:
    def __init__(self, model, grammar, prompt_ids: list[int], *, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, max_new_tokens: int = 256,
                 pad_token_id: int = 0, want_hidden: bool = False, jump_forward: bool = True,
                 end_on_repeat: bool = True, canonical: bool = True, stats: Stats | None = None,
                 cancel=None):
        """``model``: an ``engine.lean.LeanLM`` or a transformers causal LM (see
        ``engine.runners``); the prompt is prefilled here.
        ``canonical``: forced tokens are the tokenizer's own spelling and stop
        before a token the next choice could merge into (``State.forced``); False:
        longest match of every forced byte (earlier versions; for comparison).
        ``cancel``: an object with ``is_set()`` (a ``threading.Event``); once it is
        set, the next forward pass raises ``GenerationCancelled``."""
        self.model = model
        self.grammar = grammar
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.margin = close_margin(max_new_tokens)
        self.pad = pad_token_id
        self.want_hidden = want_hidden
        self.jump_forward = jump_forward
        self.end_on_repeat = end_on_repeat
        self.canonical = canonical
        self.cancel = cancel
        self.stats = stats or Stats()
        self.gen = torch.Generator().manual_seed(seed)
        start = grammar.start()
        shortest = len(start.completion_tokens(canonical))
        if shortest > max_new_tokens:
            raise GenerationError(f"max_new_tokens={max_new_tokens} is too small for even the shortest "
                                  f"valid output ({shortest} tokens)")
        self._check_cancel()
        t0 = time.perf_counter()
        self.runner = runner_for(model, prompt_ids, want_hidden)
        self.stats.forward_passes += 1
        self.stats.forward_seconds += time.perf_counter() - t0
        self._kv_stats()
        self.next_pos = [len(prompt_ids)]
        logits, hidden = self.runner.first
        root = Seq(start, next_logits=logits, hidden=hidden if want_hidden else None)
        self.rows: list[Seq] = [root]

    # ---- batch management -------------------------------------------------
    def select(self, picks: list[int]) -> None:
        """Keep rows ``picks`` (repeats fork a row), in that order."""
        if not picks:
            raise GenerationError("no candidate left to decode")
        if picks == list(range(len(self.rows))):
            return
        self.runner.select(torch.tensor(picks))
        self._kv_stats()
        self.next_pos = [self.next_pos[i] for i in picks]
        seen: set[int] = set()
        rows = []
        for i in picks:
            rows.append(self.rows[i] if i not in seen else self.rows[i].fork())
            seen.add(i)
        self.rows = rows

    # ---- decoding ---------------------------------------------------------
    def run(self, stop: StopFn, hold: int | None = None) -> list[Seq]:
        """Decode every row until it is complete or ``stop`` fires on its new events;
        rows from index ``hold`` on wait where they are (a strategy extends them after)."""
        for i, s in enumerate(self.rows):
            s.stopped = s.done or (hold is not None and i >= hold)
            s.stop_after_feed = s.stop_after_feed and bool(s.pending)  # an extended row's own stop
        while True:
            self._choose(stop)
            if not any(s.pending for s in self.rows):
                return self.rows
            self._feed()

    def settle(self) -> None:
        """Feed the tokens still pending (of rows ``extend`` added after a ``run``),
        decoding nothing further."""
        if any(s.pending for s in self.rows):
            self._feed()

    def feed_forced(self) -> None:
        """Feed every row's forced continuation now, in one pass. Strategies call this
        before forking a row into many, so the shared glue is computed once, not M times."""
        if not self.jump_forward:
            return
        for s in self.rows:
            if not s.pending and not s.done:
                forced = s.state.forced(self.canonical)
                if forced and len(s.tokens) + len(forced) + self.margin <= self.max_new_tokens:
                    self._append(s, forced, never)
        if any(s.pending for s in self.rows):
            self._feed()
        for s in self.rows:
            s.stopped = s.stop_after_feed = False

    def fork(self, picks: list[int], empty: bool = False) -> bool:
        """Feed the forced glue (once per parent), then keep rows ``picks`` (repeats
        fork a row). With ``empty``, one more row, forked from row 0, answers ``[]``
        (``close_list``) where the grammar allows it; returns whether it was added.
        Every driver of the decoder forks this way, so rollouts see the search's forks."""
        self.feed_forced()
        if not empty:
            self.select(picks)
            return False
        self.select(picks + [0])
        if self.close_list(len(picks)):
            return True
        self.select(list(range(len(picks))))
        return False

    def close_list(self, row: int) -> bool:
        """Make row ``row`` answer ``[]``: take the choice to close the call list before
        its first call, which sampling from a small policy almost never makes, though a
        search may want it scored. It counts as a chosen token with the policy's own
        (grammar-masked) probability. False (nothing done) unless the row stands at its
        first choice (call ``feed_forced`` first) and the grammar allows no call; the
        token is fed by the next ``run``."""
        s = self.rows[row]
        if (s.state.events or s.pending or s.done or s.state.forced(self.canonical)
                or s.next_logits is None):
            return False
        after = s.state.advance_bytes(s.state.completion_bytes())
        if not after.is_final or after.events[-1].value != []:
            return False
        toks = s.state.completion_tokens(self.canonical)
        self._append(s, toks, never, logprobs=[float(self.next_log_probs(row)[toks[0]])])
        return s.done

    def next_log_probs(self, row: int) -> torch.Tensor:
        """Log-probabilities of row ``row``'s next token under the grammar-masked policy
        (-inf where the grammar forbids the token), over the grammar's vocabulary."""
        s = self.rows[row]
        return _masked_log_probs(s.next_logits, s.state, self.canonical)

    def continuation_logprob(self, row: int, data: bytes) -> float:
        """The policy's (grammar-masked) log-probability that row ``row`` goes on with
        the bytes ``data``, read along their canonical tokens: "close the list"
        (``b"}}]"``), "begin another call" (``b"}}, {"``), a key, an enum value.
        Raises ``InvalidTokenError`` if the grammar forbids ``data`` there."""
        s = self.rows[row]
        s.state.advance_bytes(data)  # the grammar must allow it: a clear error if not
        return self.continuations_logprob(row, [self.grammar.vocab.canonical(data)])[0]

    def continuations_logprob(self, row: int, continuations: list[list[int]]) -> list[float]:
        """The grammar-masked log-probability of each token continuation of row
        ``row``, all in one forward pass over temporary forks of the row (dropped
        after; the other rows are untouched but for masked padding)."""
        n = len(self.rows)
        per_token = self._fork_along([(row, toks) for toks in continuations])
        self.select(list(range(n)))
        return [sum(lps) for lps in per_token]

    def room_for(self, row: int, tokens: list[int]) -> bool:
        """Whether row ``row`` can take ``tokens`` and stay clear of the budget's closing
        zone (where the loop itself closes the output)."""
        s = self.rows[row]
        if len(s.tokens) + len(tokens) + self.margin * 4 >= self.max_new_tokens:
            return False
        after = s.state
        for t in tokens:
            after = after.advance(t)
        closing = len(after.completion_tokens(self.canonical))
        return len(s.tokens) + len(tokens) + closing + self.margin * 4 < self.max_new_tokens

    def extend(self, items: list[tuple[int, list[int]]], stop: StopFn = never) -> list[int]:
        """For each ``(row, tokens)``: a fork of ``row`` that goes on with ``tokens``,
        chosen rather than sampled (an enumerated alternative, a grounded proposal),
        each token counted with the policy's grammar-masked log-prob. All of them in
        one forward pass over all tokens but the last, which the next ``run`` feeds
        (``stop`` marks where that run ends them). The forks are added at the end of
        the batch; returns their indices."""
        n = len(self.rows)
        starts = [self.rows[row].state for row, _ in items]
        per_token = self._fork_along(items)
        for j, ((_, toks), lps) in enumerate(zip(items, per_token)):
            self._append(self.rows[n + j], toks, stop, how="chosen", fed=len(toks) - 1, logprobs=lps,
                         glue=self._glue(starts[j], toks))
        return list(range(n, n + len(items)))

    def _glue(self, state: State, toks: list[int]) -> list[bool]:
        """Which of ``toks``, from ``state``, decoding one by one would have forced
        (jump-forward), not sampled: ``Trace.sibling_steps`` counts them as forced
        there, so a chunk and its sampled siblings are read alike."""
        glue, i = [False] * len(toks), 0
        while i < len(toks):
            forced = state.forced(self.canonical) if self.jump_forward else []
            if forced and toks[i:i + len(forced)] == forced:
                glue[i:i + len(forced)] = [True] * len(forced)
                for t in forced:
                    state = state.advance(t)
                i += len(forced)
            else:
                state, i = state.advance(toks[i]), i + 1
        return glue

    @torch.inference_mode()
    def _fork_along(self, items: list[tuple[int, list[int]]]) -> list[list[float]]:
        """Fork each ``row`` of ``items`` (added at the end of the batch) and feed its
        ``tokens`` but the last; returns each token's grammar-masked log-prob. The
        forks' grammar states are not advanced (``extend`` does that)."""
        paths = []
        for row, toks in items:
            s = self.rows[row]
            if s.pending or s.next_logits is None:
                raise GenerationError("continuations start at a row's choice point (nothing pending)")
            if not toks:
                raise GenerationError("an empty continuation has no probability to read")
            path = [s.state]
            for t in toks[:-1]:
                path.append(path[-1].advance(t))
            path[-1].advance(toks[-1])  # the last token must be allowed too
            paths.append(path)
        first = {row: self.next_log_probs(row) for row in {row for row, _ in items}}
        out = [[self._token_logprob(first[row], paths[j][0], toks[0])] for j, (row, toks) in enumerate(items)]
        n = len(self.rows)
        self.select(list(range(n)) + [row for row, _ in items])
        if not any(len(toks) > 1 for _, toks in items):
            return out
        for group in buckets([len(toks) - 1 for _, toks in items]):
            for j in group:
                self.rows[n + j].pending = list(items[j][1][:-1])
            logits, begins = self._feed(all_logits=True)
            for j in group:
                toks = items[j][1]
                for i in range(1, len(toks)):
                    lp = _masked_log_probs(logits[begins[n + j] + i - 1], paths[j][i], self.canonical)
                    out[j].append(self._token_logprob(lp, paths[j][i], toks[i]))
        return out

    def _token_logprob(self, lp: torch.Tensor, state: State, token: int) -> float:
        """``lp[token]``; where ``token`` is one the tokenizer would not write there (the
        last token of a prefix cut inside what it joins, as ``"`` of ``"name"`` before
        ``, "arguments"``), the log-prob of the token it writes instead, which holds
        the probability moved from ``token`` (``canonical_logits``)."""
        if self.canonical:
            token = dict(state.non_canonical()).get(token, token)
        return float(lp[token])

    def _choose(self, stop: StopFn) -> None:
        """Give every row that needs one its next tokens (forced or sampled)."""
        t0 = time.perf_counter()
        need_sample = []
        for i, s in enumerate(self.rows):
            if s.stopped or s.pending:
                continue
            if s.done:
                s.stopped = True
                continue
            left = self.max_new_tokens - len(s.tokens)
            forced = s.state.forced(self.canonical) if self.jump_forward else []
            # Near the budget, close the output while it still fits; a long closing (a call
            # with many required keys still open) is watched from further away.
            if left <= self.margin * 10:
                closing = s.state.completion_tokens(self.canonical)
                if len(closing) > left:
                    raise GenerationError(
                        f"the token budget (max_new_tokens={self.max_new_tokens}) ran out: closing "
                        f"{s.state.text!r} needs {len(closing)} tokens, {left} are left")
                after = s.state
                for t in forced:
                    after = after.advance(t)
                # Forced glue counts against the budget too: close now unless it and the
                # closing that would follow it still leave the margin.
                if len(closing) + self.margin >= left or (
                        forced and len(forced) + len(after.completion_tokens(self.canonical))
                        + self.margin >= left):
                    self._append(s, closing, stop)
                    continue
            if forced:
                self._append(s, forced, stop)
            else:
                need_sample.append(i)
        self.stats.grammar_seconds += time.perf_counter() - t0
        if not need_sample:
            return
        logits = torch.stack([self.rows[i].next_logits for i in need_sample])
        t0 = time.perf_counter()
        if self.canonical:
            logits = canonical_logits(logits, [self.rows[i].state for i in need_sample])
        masks = np.zeros((len(need_sample), logits.shape[1]), dtype=bool)
        for r, i in enumerate(need_sample):
            m = self.rows[i].state.allowed_mask()
            masks[r, :len(m)] = m
        self.stats.grammar_seconds += time.perf_counter() - t0
        masked = logits.masked_fill(~torch.from_numpy(masks).to(logits.device), float("-inf"))
        logp = torch.log_softmax(masked, dim=-1)
        toks = sample(masked, self.temperature, self.top_p, self.gen)
        t0 = time.perf_counter()
        for r, i in enumerate(need_sample):
            s = self.rows[i]
            tok = int(toks[r])
            left = self.max_new_tokens - len(s.tokens) - 1
            if left <= self.margin * 10 and len(s.state.advance(tok).completion_tokens(self.canonical)) \
                    + self.margin > left:
                # this token would leave too little room to close (e.g. "," before a call
                # with many required keys): close the output now instead
                self._append(s, s.state.completion_tokens(self.canonical), stop)
                continue
            self.stats.generated_tokens += 1
            self._append(s, [tok], stop, how="sampled", logprobs=[float(logp[r, tok])])
            far = self.max_new_tokens - len(s.tokens) > self.margin * 4  # else: next round checks
            if self.jump_forward and far and not s.stop_after_feed and not s.done:  # same pass
                more = s.state.forced(self.canonical)
                if more:
                    self._append(s, more, stop)
        self.stats.grammar_seconds += time.perf_counter() - t0

    def _append(self, s: Seq, toks: list[int], stop: StopFn, how: str = "forced", fed: int = 0,
                logprobs: Sequence[float] = (), glue: Sequence[bool] = ()) -> None:
        """Advance row ``s`` through ``toks``, ``how`` they came: "forced", "sampled"
        or "chosen" (an alternative a strategy picked); the first ``len(logprobs)``
        were chosen by (or for) the policy with those log-probs, the rest are forced
        (and so are those ``glue`` marks, for ``Trace.sibling_steps`` alone).
        The first ``fed`` are already in the KV cache, the rest wait for the next feed."""
        for lp in logprobs:
            s.trace.chosen(lp)
        for k, t in enumerate(toks):
            before, s.state = s.state, s.state.advance(t)
            counted = k < len(logprobs) and not (k < len(glue) and glue[k])
            s.trace.token(logprobs[k] if counted else None,
                          [e.offset for e in s.state.events[len(before.events):]], s.state.chars)
            if s.state.calls_closed > before.calls_closed and self._closed_a_call(s, before):
                s.repeated_call = True
                s.trace.truncate(len(s.state.events) - 1)  # the dropped call's steps
                toks = self._respell(s, toks[:k + 1])
                break
        s.tokens.extend(toks)
        s.trace.close_events(len(s.state.events))
        s.pending.extend(toks[fed:])
        if how == "forced":
            self.stats.forced_tokens += len(toks)
        elif how == "chosen":
            self.stats.chosen_tokens += len(toks)
        events = s.state.events
        new = events[s.n_events:]
        s.n_events = len(events)
        if stop(s, new) or s.done:
            s.stop_after_feed = True

    def _respell(self, s: Seq, toks: list[int]) -> list[int]:
        """After a dropped repeat the text ends at the previous call, then "]": keep
        the row's tokens (and ``toks``, about to be appended) up to that point, drop
        the repeated call's, and spell the rest canonically. Returns what to append,
        so that the row's tokens spell its text. The closers that end the kept call
        (quotes, brackets, braces) are spelled anew with the "]", as the tokenizer
        would spell them together."""
        vocab = self.grammar.vocab
        keep = len(s.state.raw) - 1  # the bytes before the closing "]"
        n = used = 0
        both = s.tokens + toks
        for t in both:
            if used + len(vocab.token_bytes[t]) > keep:
                break
            used += len(vocab.token_bytes[t])
            n += 1
        while n and all(b in _CLOSERS for b in vocab.token_bytes[both[n - 1]]):
            n -= 1
            used -= len(vocab.token_bytes[both[n]])
        tail = s.state.raw[used:]
        old = len(s.tokens)
        del s.tokens[n:]
        return toks[:max(0, n - old)] + (vocab.canonical(tail) if self.canonical else vocab.longest_match(tail))

    def _closed_a_call(self, s: Seq, before: State) -> bool:
        """Record where the call the last token closed ends; if that call repeats an
        earlier one of the list (same name and arguments), drop it and close the list
        there instead, and return True. Small models loop on their first call, and an
        identical call adds nothing, so this is where the list ends."""
        end = before
        for b in s.state.raw[len(before.raw):]:  # the token may carry more than the brace
            end = end.advance_bytes(bytes([b]))
            if end.calls_closed > before.calls_closed:
                break
        s.call_ends.append(end)
        calls = end.calls()
        if not self.end_on_repeat or calls[-1] not in calls[:-1]:
            return False
        try:
            s.state = s.call_ends[-2].advance_bytes(b"]")
        except InvalidTokenError:  # the list may not close here (e.g. a minimum count)
            return False
        del s.call_ends[-1]
        return True

    def _feed(self, all_logits: bool = False) -> tuple[torch.Tensor, dict[int, int]] | None:
        """One forward pass over the pending tokens of the rows that have some (the
        others, stopped at a step boundary, wait at no compute); with ``all_logits``
        the logits of every pending token, packed row by row (count x vocab), and
        where each fed row's tokens begin in them (keyed by the row's index)."""
        rows = self.rows
        fed = [r for r, s in enumerate(rows) if s.pending]
        width = max(len(rows[r].pending) for r in fed)
        self.stats.fed_slots += width * len(fed)
        ids = torch.full((len(fed), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(fed), width), dtype=torch.bool)
        pos = torch.zeros((len(fed), width), dtype=torch.long)
        for j, r in enumerate(fed):
            n = len(rows[r].pending)
            ids[j, width - n:] = torch.tensor(rows[r].pending)
            mask[j, width - n:] = True
            pos[j, width - n:] = torch.arange(self.next_pos[r], self.next_pos[r] + n)
            self.next_pos[r] += n
        which = None if len(fed) == len(rows) else torch.tensor(fed)
        logits, hid = self._forward(ids, mask, pos, keep=mask if all_logits else 1, which=which)
        counts = mask.sum(1)
        last = logits[counts.cumsum(0) - 1] if all_logits else logits[:, -1]
        hid = hid if self.want_hidden else None
        for j, r in enumerate(fed):
            s = rows[r]
            s.pending = []
            while len(s.trace.positions) < s.n_events:
                s.trace.positions.append(len(s.tokens) - 1)
                if hid is not None:
                    s.trace.hidden.append(hid[j])
            s.next_logits = last[j]
            if hid is not None:
                s.hidden = hid[j]
            if s.stop_after_feed:
                s.stopped = True
        if not all_logits:
            return None
        begins = dict(zip(fed, (counts.cumsum(0) - counts).tolist()))
        return logits, begins

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise GenerationCancelled("generation was cancelled")

    def _forward(self, ids, valid, pos, keep: int | torch.Tensor = 1, which: torch.Tensor | None = None):
        self._check_cancel()
        t0 = time.perf_counter()
        out = self.runner.feed(ids, valid, pos, keep, which)
        self.stats.forward_passes += 1
        self.stats.forward_seconds += time.perf_counter() - t0
        self._kv_stats()
        return out

    def _kv_stats(self) -> None:
        self.stats.kv_written_bytes = self.runner.kv_written
        self.stats.kv_peak_bytes = self.runner.kv_peak


def buckets(lengths: list[int], pass_cost: int = 6) -> list[list[int]]:
    """The indices of the non-empty ``lengths``, grouped into forward passes: rows
    are right-aligned to the longest of their pass, so each pass costs its rows x
    that width in slots, and a pass itself about ``pass_cost`` slots (reading the
    weights once: on the lean int4 runtime a step of one row took 25 ms and one of
    16 rows 88 ms, about 21 ms fixed and 4 ms a row). The grouping of the sorted
    lengths that costs least."""
    order = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: lengths[i])
    best = [0.0] + [math.inf] * len(order)  # best[k]: cost of the k shortest
    cut = [0] * (len(order) + 1)
    for k in range(1, len(order) + 1):
        for a in range(k):  # the last pass holds order[a:k]; its width is the longest
            cost = best[a] + pass_cost + (k - a) * lengths[order[k - 1]]
            if cost < best[k]:
                best[k], cut[k] = cost, a
    groups, k = [], len(order)
    while k:
        groups.append(order[cut[k]:k])
        k = cut[k]
    return groups[::-1]


def canonical_logits(logits: torch.Tensor, states: list[State]) -> torch.Tensor:
    """Row ``r`` of ``logits`` (decoding ``states[r]``) with the probability of each
    token the tokenizer would not write there (``State.non_canonical``) added to
    the token it writes instead: the model keeps its choice of bytes (this enum
    value, this key) in the tokenizer's own spelling. A copy where anything moved."""
    out = logits
    for r, state in enumerate(states):
        for t, instead in state.non_canonical():
            if out is logits:
                out = logits.float().clone()
            out[r, instead] = torch.logaddexp(out[r, instead], out[r, t])
            out[r, t] = float("-inf")
    return out


def _masked_log_probs(logits: torch.Tensor, state: State, canonical: bool = True) -> torch.Tensor:
    """log-softmax of ``logits`` over the tokens ``state`` allows (-inf elsewhere),
    the distribution the decoder samples from (with ``canonical``, after
    ``canonical_logits``)."""
    m = torch.from_numpy(np.array(state.allowed_mask(), dtype=bool)).to(logits.device)
    row = logits[:len(m)].float()
    if canonical:
        row = canonical_logits(row[None], [state])[0]
    return torch.log_softmax(row.masked_fill(~m, float("-inf")), dim=-1)


#: A temperature below this decodes greedily: sampling at it differs from greedy only
#: on exact ties, and logits divided by it overflow (a request's temperature of 5e-324
#: made the sampler's probabilities NaN).
GREEDY_BELOW = 1e-5


def sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """Greedy when temperature is under ``GREEDY_BELOW``, else temperature + nucleus
    sampling (seeded)."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        cut = sp.cumsum(dim=-1) - sp > top_p
        sp = sp.masked_fill(cut, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
