"""The decoding loop and the search strategies on a tiny, randomly initialised causal
LM (with the byte-level BPE tokenizer trained in conftest): the loop's logic without
the real weights. Scripted scorers stand in where the real PRM's choice is not the
point; everything else (model, KV cache, grammar, decoder) is the real code."""
from __future__ import annotations

import json
import zlib

import jsonschema
import pytest
import torch

from toolprm.engine.decode import Seq, Stats, never
from toolprm.engine.models import Policy
from toolprm.engine.query import prepare
from toolprm.engine.search import STRATEGIES, Search, aggregate, beam, best_of_n
from toolprm.grammar import StepEvent, Vocabulary, compile

TOOLS = [{"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {
              "city": {"type": "string", "maxLength": 12},
              "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
              "required": ["city"]}},
         {"name": "ping", "description": "Ping", "parameters": {"type": "object", "properties": {}}}]
PING_PONG = [{"name": n, "description": n, "parameters": {
    "type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]}} for n in ("ping", "pong")]
QUERY = "weather in Paris?"


def _tiny(tokenizer, avoid: tuple[bytes, ...] = ()) -> Policy:
    """A random one-layer Llama; with ``avoid``, a policy whose logits ignore the input
    and put every token containing any of those byte strings far below the rest."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    if avoid:
        vocab = Vocabulary.from_tokenizer(tokenizer)
        head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=True)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([-20.0 if b and any(a in b for a in avoid) else 0.0
                                          for b in vocab.token_bytes[:cfg.vocab_size]]))
        model.lm_head = head
    return Policy(model, tokenizer, "tiny")


@pytest.fixture(scope="module")
def tiny(bpe_tokenizer):
    return _tiny(bpe_tokenizer)


class HashScorer:
    """A deterministic, arbitrary score per partial output; remembers what it saw."""

    def __init__(self):
        self.rounds: list[dict[str, float]] = []

    def score(self, context, candidates):
        out = [(zlib.crc32(c.text.encode()) % 1000) / 1000 for c in candidates]
        self.rounds.append(dict(zip((c.text for c in candidates), out)))
        return out


def _search(policy, tools=TOOLS, calls="any", scorer=None, m=3, n=2, temperature=1.0, seed=0,
            on_step=None, max_new_tokens=80) -> Search:
    q = prepare(policy.tokenizer, QUERY, tools)
    stats = Stats()
    dec = q.decoder(policy, calls, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens,
                    stats=stats)
    return Search(dec, q, m, n, scorer or HashScorer(), "last", stats, on_step)


def _valid(seq: Seq, tools=TOOLS, calls="any", tokenizer=None):
    assert seq.done
    out = json.loads(seq.state.text)
    jsonschema.validate(out, compile(tools, tokenizer, calls=calls).schema)
    return out


@pytest.mark.parametrize("name", [k for k, v in STRATEGIES.items() if v.run is not None])
def test_every_strategy_gives_a_valid_output_and_the_same_one_for_the_same_seed(tiny, name):
    spec = STRATEGIES[name]
    outs = []
    for _ in range(2):
        s = _search(tiny, temperature=0.0 if spec.greedy else 1.0, seed=7)
        best = spec.run(s)
        outs.append(_valid(best, tokenizer=tiny.tokenizer))
    assert outs[0] == outs[1]


def test_fork_adds_the_empty_list_only_where_the_grammar_allows_it(tiny):
    s = _search(tiny, calls="any")
    assert s.dec.fork([0, 0], empty=True) and len(s.dec.rows) == 3
    rows = s.dec.run(never)
    assert rows[2].state.text == "[]" and rows[2].trace.step_sampled == 1  # a chosen token, scored
    s = _search(tiny, calls="one")
    assert not s.dec.fork([0, 0], empty=True) and len(s.dec.rows) == 2


def test_forked_rows_have_their_own_trace(tiny):
    s = _search(tiny)
    s.dec.fork([0, 0])
    a, b = s.dec.rows
    a.trace.scores[0] = 0.5
    a.trace.begin_step()
    a.trace.chosen(-1.0)
    assert b.trace.scores == {} and b.trace.logprob == 0.0 and a.trace.logprob == -1.0
    assert a.tokens is not b.tokens and a.call_ends is not b.call_ends


def test_beam_keeps_the_top_n_by_score(tiny):
    """At every step a scored candidate is kept live only if no dropped candidate of
    that step scored higher (a beam that ignored the scores would keep others);
    finished outputs leave the beam for the pool."""
    log: list[tuple[str, object]] = []

    class Logged(HashScorer):
        def score(self, context, candidates):
            out = super().score(context, candidates)
            log.append(("scored", {c.text: sc for c, sc in zip(candidates, out) if not c.final}))
            return out

    s = _search(tiny, scorer=Logged(), m=4, n=2,
                on_step=lambda rows: log.append(("kept", {r.state.text for r in rows if not r.done})))
    beam(s)
    compared = 0
    for (what, scored), (nxt, kept) in zip(log, log[1:]):
        if what != "scored":
            continue
        assert nxt == "kept"
        kept_scores = [v for t, v in scored.items() if t in kept]
        dropped = [v for t, v in scored.items() if t not in kept]
        assert len(kept & set(scored)) <= 2
        for a in kept_scores:
            for b in dropped:
                assert a >= b
                compared += 1
    assert compared, "no step had a kept and a dropped candidate"


def test_best_of_n_returns_the_highest_scored_output(tiny):
    scorer = HashScorer()
    s = _search(tiny, scorer=scorer, n=4)
    best = best_of_n(s)
    (seen,) = scorer.rounds
    assert len(seen) >= 2 and seen[best.state.text] == max(seen.values())
    assert best.trace.scores == {len(best.state.events) - 1: seen[best.state.text]}


def test_a_dropped_repeated_call_takes_its_scores_with_it(bpe_tokenizer):
    """Regression: when a call that repeats an earlier one is dropped (the list closes
    there), the scores recorded on its steps go too, so a beam ranks the output by the
    steps it has. (They used to stay in the list ``aggregate`` ranked by.)

    A policy that never writes "]", "o" or "f" continues the list after the first call,
    names "ping" again and gives x the same value, so the second call repeats the first."""
    s = _search(_tiny(bpe_tokenizer, avoid=(b"]", b"o", b"f")), tools=PING_PONG, temperature=0.0)
    dec = s.dec
    dec.select([0])
    scored_events = []
    while not dec.rows[0].done:
        row = dec.run(lambda seq, ev: bool(ev))[0]
        k = len(row.state.events) - 1
        row.trace.scores[k] = 0.9 ** (k + 1)  # as Search.score records a step's score
        scored_events.append((k, row.state.events[k].kind, row.state.events[k].call))
    row = dec.rows[0]
    assert row.state.events[-1].value == [{"name": "ping", "arguments": {"x": True}}]
    # a step of the repeated call was scored before the call closed and was dropped
    assert any(call == 1 and kind != "end" for _, kind, call in scored_events), scored_events
    assert set(row.trace.scores) <= set(range(len(row.state.events)))
    assert len(row.trace.positions) == len(row.trace.steps) == len(row.state.events)
    assert aggregate(row.trace.score_list(), "min") == pytest.approx(row.trace.scores[len(row.state.events) - 1])


class FinalsLow(HashScorer):
    """Scores fall with depth, and a finished output scores below a live one of the same
    depth: a beam that let live outputs push finished ones out would lose the early,
    better finished ones and return a later, worse one."""
    prefix_product = False

    def __init__(self):
        super().__init__()
        self.finals: dict[str, float] = {}

    def score(self, context, candidates):
        super().score(context, candidates)
        out = [max(0.01, (0.95 if c.final else 1.0) - 0.1 * len(c.events)) for c in candidates]
        # finished call lists go to the pool; [] has to keep its slot in the beam
        self.finals.update({c.text: sc for c, sc in zip(candidates, out) if c.final and c.text != "[]"})
        return out


def test_beam_returns_the_best_finished_output(tiny):
    scorer = FinalsLow()
    best = beam(_search(tiny, scorer=scorer, m=4, n=2))
    assert best.done and len(scorer.finals) >= 2
    assert aggregate(best.trace.score_list(), "last") >= max(scorer.finals.values())


def test_beam_stops_once_nothing_live_can_overtake_a_finished_output(tiny):
    """With prefix-product scores (they only fall as an output grows), the search ends
    in the round where a finished output scores at least as high as every live one."""
    class Halving(HashScorer):
        prefix_product = True

        def score(self, context, candidates):
            super().score(context, candidates)
            # [] scores low here: it ends the search once it leads (the test below)
            out = [0.01 if c.text == "[]" else (1.0 if c.final else 0.6) * 0.5 ** len(c.events)
                   for c in candidates]
            self.rounds[-1] = {c.text: (sc, c.final) for c, sc in zip(candidates, out) if c.text != "[]"}
            return out

    scorer = Halving()
    best = beam(_search(tiny, scorer=scorer, m=4, n=2))
    last = scorer.rounds[-1]
    finals = [sc for sc, final in last.values() if final]
    assert best.done and finals and max(finals) >= max(sc for sc, final in last.values() if not final) \
        if any(not f for _, f in last.values()) else True
    for earlier in scorer.rounds[:-1]:  # no earlier round had a finished output that good
        done = [sc for sc, final in earlier.values() if final]
        live = [sc for sc, final in earlier.values() if not final]
        assert not done or not live or max(done) < max(live)


def test_beam_stops_when_the_empty_list_leads(tiny):
    """[] holds a slot in the beam rather than the pool; once it scores at least as high
    as every live output, with prefix-product scores nothing can overtake it: the
    search ends in that round and answers []."""
    class EmptyLeads(HashScorer):
        prefix_product = True

        def score(self, context, candidates):
            super().score(context, candidates)
            return [0.9 if c.text == "[]" else 0.6 * 0.9 ** len(c.events) for c in candidates]

    scorer = EmptyLeads()
    best = beam(_search(tiny, scorer=scorer, m=4, n=2))
    assert best.state.text == "[]" and len(scorer.rounds) == 1


def _events(*kinds):
    """Step events of the given kinds; each "name" begins the next call."""
    out, call = [], -1
    for kind in kinds:
        call += kind == "name"
        out.append(StepEvent(kind, call, None, "", None, 0))
    return tuple(out)


def test_geomean_is_the_score_per_step_and_percall_the_score_per_call():
    two = _events("name", "key")
    # a prefix product over 2 steps: its square root; step scores: their geometric mean
    assert aggregate([0.5, 0.25], "geomean", two, product=True) == pytest.approx(0.5)
    assert aggregate([0.5, 0.125], "geomean") == pytest.approx(0.25)
    # "last" ranks a 1-step output at 0.6 above a 4-step one at 0.85 a step; "geomean" does not
    short, long_ = [0.6], [0.85 ** k for k in range(1, 5)]
    assert aggregate(short, "last") > aggregate(long_, "last")
    assert aggregate(short, "geomean", _events("name"), True) < \
        aggregate(long_, "geomean", _events("name", "key", "value", "end"), True)
    # per call: one call keeps its product; two calls, the product's square root
    assert aggregate([0.3], "percall", _events("name", "key", "value", "end"), True) == pytest.approx(0.3)
    assert aggregate([0.09], "percall", _events("name", "value", "name", "value"), True) == pytest.approx(0.3)


def test_geomean_beam_returns_the_finished_output_best_per_step(tiny):
    """With "geomean" nothing stops the search early (a score per step can rise), and
    of every finished call list the scorer saw, the best per step is returned."""
    class Products(HashScorer):
        prefix_product = True

        def __init__(self):
            super().__init__()
            self.finals: dict[str, float] = {}

        def score(self, context, candidates):
            steps = super().score(context, candidates)
            out = [0.5 * sc ** len(c.events) for c, sc in zip(candidates, steps)]  # falls with length
            self.finals.update({c.text: sc ** (1 / len(c.events)) for c, sc in zip(candidates, out)
                                if c.final and c.text != "[]"})
            return out

    scorer = Products()
    s = _search(tiny, scorer=scorer, m=4, n=2)
    s.aggregation = "geomean"
    best = beam(s)
    assert best.done and scorer.finals
    got = aggregate(best.trace.score_list(), "geomean", best.state.events, True)
    assert got >= max(scorer.finals.values()) - 1e-9
