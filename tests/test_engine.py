"""End-to-end tests of the decoding loop and strategies with the real default model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest
import torch

from toolprm import engine
from toolprm.bfcl import load_cases
from toolprm.engine.decode import Decoder, Trace, canonical_logits, never
from toolprm.engine.logits import GrammarLogitsProcessor
from toolprm.engine.parse import parse_calls
from toolprm.engine.prompts import build_prompt
from toolprm.errors import GenerationError
from toolprm.grammar import compile, normalize_tools

STRATEGIES = ["greedy", "sample", "best_of_n", "majority", "coarse_beam", "fine_beam"]


@pytest.fixture(scope="module")
def policy():
    return engine.get_policy()


@pytest.fixture(scope="module")
def cases():
    return [load_cases("simple_python", limit=2)[1], load_cases("multiple", limit=1)[0],
            load_cases("parallel", limit=1)[0], load_cases("irrelevance", limit=1)[0]]


def _valid(result, tools, calls="any"):
    assert result.calls is not None
    schema = compile(tools, engine.get_policy().tokenizer, calls=calls).schema
    jsonschema.validate(result.calls, schema)
    assert json.loads(result.text) == result.calls


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_returns_schema_valid_calls(policy, cases, strategy):
    # Two cases per strategy keep the suite affordable; greedy and fine_beam see all four.
    for case in cases if strategy in ("greedy", "fine_beam") else cases[1::2]:
        r = engine.generate(case.messages, case.tools, model=policy, strategy=strategy, m=2, n=2,
                            max_new_tokens=128, seed=1)
        _valid(r, case.tools)
        assert r.strategy == strategy
        st = r.stats
        assert st["forward_passes"] >= 1 and st["generated_tokens"] + st["forced_tokens"] >= 2
        kinds = [s["kind"] for s in r.steps]
        assert kinds[-1] == "end"
        assert kinds.count("name") == len(r.calls)


def test_fine_beam_scores_steps_and_streams(policy, cases):
    seen = []
    r = engine.generate(cases[0].messages, cases[0].tools, model=policy, strategy="fine_beam", m=3, n=2,
                        max_new_tokens=128, on_step=seen.append)
    assert seen == r.steps
    assert r.stats["scorer_calls"] > 0
    assert any(s["score"] is not None for s in r.steps)


def test_same_seed_same_output_different_seed_differs(policy, cases):
    case = cases[0]
    outs = [engine.generate(case.messages, case.tools, model=policy, strategy="sample", seed=s,
                            temperature=1.5, max_new_tokens=64).text for s in (7, 7, 8, 9)]
    assert outs[0] == outs[1]
    assert len(set(outs)) > 1


def test_budget_exhaustion_closes_cleanly(policy):
    tools = [{"name": "write_note", "description": "Save a long note.",
              "parameters": {"type": "object", "properties": {
                  "title": {"type": "string"}, "body": {"type": "string", "minLength": 3}},
                  "required": ["title", "body"]}}]
    q = "Write a very long note about the history of Rome, with every emperor in it."
    for budget in (24, 40):
        r = engine.generate(q, tools, model=policy, strategy="sample", temperature=1.0,
                            calls="one", max_new_tokens=budget)
        _valid(r, tools, calls="one")
        assert r.stats["generated_tokens"] + r.stats["forced_tokens"] <= budget
    with pytest.raises(GenerationError, match="max_new_tokens"):
        engine.generate(q, tools, model=policy, strategy="greedy", calls="one", max_new_tokens=5)


def test_logits_processor_agrees_with_loop_greedy(policy, cases):
    for case in cases[:2]:
        norm = normalize_tools(case.tools)
        g = compile(norm, policy.tokenizer, calls="any")
        prompt = build_prompt(policy.tokenizer, case.messages, [t.spec() for t in norm])
        ids = policy.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        dec = Decoder(policy.model, g, ids, temperature=0.0, max_new_tokens=120, jump_forward=False,
                      end_on_repeat=False)  # the processor only masks; it cannot rewrite the output
        loop = dec.run(lambda s, ev: False)[0].state.text
        with torch.inference_mode():
            out = policy.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                        logits_processor=[GrammarLogitsProcessor(g)], do_sample=False,
                                        max_new_tokens=120, pad_token_id=policy.tokenizer.eos_token_id)
        hf = policy.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
        assert hf == loop


def test_a_repeated_call_ends_the_list(policy):
    # The 135M model answers BFCL simple_python_10 with the same call over and over.
    case = next(c for c in load_cases("simple_python", 40) if c.id == "simple_python_10")
    norm = normalize_tools(case.tools)
    g = compile(norm, policy.tokenizer, calls="any")
    prompt = build_prompt(policy.tokenizer, case.messages, [t.spec() for t in norm])
    ids = policy.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def greedy(end_on_repeat):
        dec = Decoder(policy.model, g, ids, temperature=0.0, max_new_tokens=96, end_on_repeat=end_on_repeat)
        return dec.run(lambda s, ev: False)[0]

    looped, ended = greedy(False), greedy(True)
    first = looped.state.calls()[0]
    assert len(looped.state.calls()) > 1 and all(c == first for c in looped.state.calls())
    assert ended.done and ended.state.events[-1].value == [first]
    assert ended.state.text == looped.state.text[:len(ended.state.text) - 1] + "]"
    assert ended.state.calls_closed == 1 and len(ended.call_ends) == 1
    assert ended.repeated_call and not looped.repeated_call  # what distinct_calls reads
    # The engine ends on a repeat by default, in every strategy.
    r = engine.generate(case.messages, case.tools, model=policy, strategy="greedy", max_new_tokens=96)
    assert r.calls == [first]


def test_decoder_records_every_step_for_the_prm(policy, cases):
    """Each event keeps the hidden state and step log-prob a PRM reads: driven step by
    step (the fine beam) they are the row's state at that boundary; run straight
    through (best-of-N), every event still has one, and the sampled counts add up."""
    case = cases[2]
    q = engine.prepare(policy.tokenizer, case.messages, case.tools)
    dec = q.decoder(policy, "any", temperature=0.9, seed=3, max_new_tokens=96, want_hidden=True)
    dec.select([0, 0, 0])
    seen = [0, 0, 0]
    while not all(s.done for s in dec.rows):
        for r, s in enumerate(dec.run(lambda s, ev: bool(ev))):
            n = len(s.state.events)
            t = s.trace
            assert len(t.hidden) == len(t.steps) == n
            for i in range(seen[r], n):  # the events of this chunk
                assert torch.equal(t.hidden[i], s.hidden)
                assert t.steps[i] == pytest.approx((t.step_logprob, t.step_sampled))
            seen[r] = n
            t.begin_step()
    dec = q.decoder(policy, "any", temperature=0.9, seed=3, max_new_tokens=96, want_hidden=True)
    dec.select([0, 0])
    for s in dec.run(lambda s, ev: False):
        t = s.trace
        assert len(t.hidden) == len(t.steps) == len(s.state.events) > 0
        # events carried by one chunk share its counts (budget closing can carry several)
        chunks = {}
        for p, st in zip(t.positions, t.steps):
            chunks.setdefault(p, st)
        assert sum(n for _, n in chunks.values()) == t.step_sampled
        assert sum(lp for lp, _ in chunks.values()) == pytest.approx(t.logprob)


def test_a_token_that_straddles_a_step_boundary_counts_for_the_later_step():
    """``Trace.sibling_steps``: a token ending inside a step's text goes to that step;
    one that goes past its end (``",`` after a value) to the next step it reaches."""
    t = Trace()
    t.token(-1.0, [], 5)           # "Paris: inside the value
    t.token(-0.5, [6], 8)          # ", : the value ended at 6, inside the token
    t.token(None, [], 10)          # forced: not counted
    t.token(-0.25, [12, 12], 12)   # two steps ending with the token share it
    assert t.sibling_steps == [(-1.0, 1), (-0.75, 2), (-0.75, 2)]


def test_sibling_steps_are_the_same_in_one_chunk_or_token_by_token(policy, cases):
    """A continuation fed in one chunk (``Decoder.extend``, as a closed value is) has
    the same per-step probabilities by token as the same tokens decoded one by one,
    where the chunk-wise ``steps`` give every step the whole chunk."""
    case = cases[0]
    q = engine.prepare(policy.tokenizer, case.messages, case.tools)
    walked = q.decoder(policy, "any", max_new_tokens=96).run(never)[0]
    dec = q.decoder(policy, "any", max_new_tokens=96)
    row = dec.extend([(0, walked.tokens)])[0]
    chunk = dec.rows[row]
    assert chunk.state.text == walked.state.text and len(walked.state.events) > 2
    got, want = chunk.trace.sibling_steps, walked.trace.sibling_steps
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in want], abs=1e-3)
    assert sum(lp for lp, _ in want) == pytest.approx(walked.trace.logprob, abs=1e-4)
    assert len({lp for lp, _ in chunk.trace.steps}) == 1  # one chunk: every step the whole
    assert walked.trace.sibling_steps != walked.trace.steps  # its '",' and '}}' straddle


def test_beam_search_offers_the_empty_list(policy, cases):
    """The first step of a beam search also offers [] (a 135M policy almost never
    samples it), with the policy's own probability of it: a scorer that likes it gets
    it, the policy's confidence does not, and a grammar that needs a call never sees it."""
    from toolprm.engine.search import PolicyScorer

    class LikesEmpty:
        def __init__(self):
            self.seen = []

        def score(self, ctx, cands):
            self.seen += cands
            return [1.0 if c.events[-1].kind == "end" and c.events[-1].value == [] else 0.1 for c in cands]

    case = cases[0]  # simple_python: the policy calls the tool
    for strategy in ("fine_beam", "coarse_beam"):
        likes = LikesEmpty()
        r = engine.generate(case.messages, case.tools, model=policy, strategy=strategy, m=2, n=1,
                            scorer=likes, max_new_tokens=96)
        assert r.calls == [] and r.text == "[]"
        empty = [c for c in likes.seen if c.events[-1].value == []]
        assert empty and empty[0].step_tokens == 1 and -30 < empty[0].step_logprob < 0
    r = engine.generate(case.messages, case.tools, model=policy, strategy="fine_beam", m=2, n=1,
                        scorer=PolicyScorer(), max_new_tokens=96)
    assert r.calls  # the policy gives [] a low probability
    r = engine.generate(case.messages, case.tools, model=policy, strategy="fine_beam", m=2, n=1,
                        scorer=LikesEmpty(), calls="one", max_new_tokens=96)
    assert len(r.calls) == 1
    # close_list only acts at the first choice
    dec = engine.prepare(policy.tokenizer, case.messages, case.tools).decoder(policy, "any",
                                                                             max_new_tokens=64)
    assert not dec.close_list(0)  # before the forced "[" is fed
    dec.feed_forced()
    assert dec.close_list(0) and dec.run(lambda s, ev: False)[0].state.text == "[]"


def test_jump_forward_saves_forward_passes(policy, cases):
    case = cases[1]
    r = engine.generate(case.messages, case.tools, model=policy, strategy="greedy", max_new_tokens=160)
    st = r.stats
    assert st["forced_tokens"] > 0
    assert st["forward_passes"] < st["generated_tokens"] + st["forced_tokens"]


def test_bad_arguments_give_clear_errors(policy, cases):
    case = cases[0]
    with pytest.raises(engine.api.ToolprmError, match="unknown strategy"):
        engine.generate("hi", case.tools, model=policy, strategy="nope")
    with pytest.raises(engine.api.ToolprmError, match="m must be a positive integer"):
        engine.generate("hi", case.tools, model=policy, m=0)
    with pytest.raises(engine.api.ToolprmError, match="query must be"):
        engine.generate(42, case.tools, model=policy)
    with pytest.raises(engine.api.ToolprmError, match="aggregation must be one of"):
        engine.generate("hi", case.tools, model=policy, aggregation="median")
    with pytest.raises(engine.api.ToolprmError, match="scorer must be None, one of 'prm', 'hybrid', 'policy', 'minilm'"):
        engine.generate("hi", case.tools, model=policy, scorer="oracle")
    with pytest.raises(engine.api.ToolprmError, match="model must be None, a model name/path"):
        engine.generate("hi", case.tools, model=3.5)
    with pytest.raises(engine.api.ToolprmError, match="did you mean 'smollm2'"):
        engine.generate("hi", case.tools, model="smollm")


def test_nucleus_sampling_keeps_only_the_top_p_mass():
    """top_p < 1 draws only from the smallest set of likeliest tokens whose mass
    reaches top_p, renormalised: here tokens 0 and 1 (0.5 + 0.3), at 5:3."""
    from toolprm.engine.decode import sample
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    draws = sample(logits, 1.0, 0.6, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}
    assert abs((draws == 0).float().mean().item() - 0.625) < 0.03
    everything = sample(logits, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert set(everything.tolist()) == {0, 1, 2, 3}


def test_unconstrained_text_and_a_result_as_a_dict(policy, cases):
    """The unconstrained baseline returns the model's own text, parsed afterwards;
    a Result is plain data (JSON round trip)."""
    case = cases[0]
    r = engine.generate(case.messages, case.tools, model=policy, strategy="unconstrained", max_new_tokens=48)
    assert r.strategy == "unconstrained" and r.text and r.steps == []
    assert r.text == policy.tokenizer.decode(r.token_ids, skip_special_tokens=True)
    assert r.calls == parse_calls(r.text)
    g = engine.generate(case.messages, case.tools, model=policy, strategy="greedy", scorer="policy",
                        max_new_tokens=96)
    d = g.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"calls", "text", "steps", "stats", "strategy", "token_ids"}
    assert d["calls"] == g.calls and d["steps"][-1]["kind"] == "end"


def test_parse_calls():
    assert parse_calls('[{"name": "f", "arguments": {"a": 1}}]') == [{"name": "f", "arguments": {"a": 1}}]
    assert parse_calls('Sure! ```json\n[{"name": "f", "arguments": {}}]\n```') == [{"name": "f", "arguments": {}}]
    assert parse_calls('{"name": "f", "arguments": "{\\"a\\": 2}"}') == [{"name": "f", "arguments": {"a": 2}}]
    assert parse_calls("[]") == []
    assert parse_calls("I cannot help with that.") is None
    assert parse_calls('[{"arguments": {}}]') is None


def test_cli_generate(tmp_path, cases):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(cases[0].tools))
    q = cases[0].messages[-1]["content"]
    p = subprocess.run([sys.executable, "-m", "toolprm.engine.cli", "generate", "--tools", str(tools),
                        "--strategy", "greedy", "--trace", q], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TOOLPRM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    calls = json.loads(p.stdout)
    # simple_python_1: "How much CO2 is produced annually by a gas-fueled car that travels 12,000
    # miles per year, with fuel efficiency of 25 MPG ?"; greedy calls the one tool with the numbers
    # of the query (it picks fuel_type "electric", so only these two arguments are pinned)
    assert len(calls) == 1 and calls[0]["name"] == cases[0].tools[0]["name"] == "calculate_emissions", calls
    assert {"distance": 12000, "fuel_efficiency": 25}.items() <= calls[0]["arguments"].items(), calls
    # --trace: one line per step on stderr, the name first and the end of the list last
    trace = [line.split() for line in p.stderr.splitlines() if line.startswith("  ")]
    assert trace[0][:3] == ["name", "call", "0"] and trace[0][-1] == '"calculate_emissions"', p.stderr
    assert trace[-1][:3] == ["end", "call", "1"], p.stderr
    assert [t[-1] for t in trace if t[0] == "key"] == [json.dumps(k) for k in calls[0]["arguments"]], p.stderr
    bad = subprocess.run([sys.executable, "-m", "toolprm.engine.cli", "generate", "--tools",
                          str(tmp_path / "missing.json"), "q"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "cannot read tools" in bad.stderr


def test_continuation_logprob_is_the_sum_along_its_canonical_tokens(policy):
    """Decoder.continuation_logprob equals the log-probs the decoder samples from
    (grammar-masked, non-canonical tokens' mass moved to the tokenizer's own) of
    the continuation's canonical tokens, read off one plain forward pass of the model."""
    tools = [{"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    q = engine.prepare(policy.tokenizer, "Weather in Paris and in Rome?", tools)
    dec = q.decoder(policy, "any", max_new_tokens=80)
    vocab = dec.grammar.vocab
    prefix = b'[{"name": "get_weather", "arguments": {"city": "Paris"'
    for tail in (b"}}]", b'}}, {"', b""):
        data = prefix + tail
        got = dec.continuation_logprob(0, data)
        ids = vocab.canonical(data)
        with torch.inference_mode():
            logits = policy.model(torch.tensor([q.prompt_ids + ids])).logits[0].float()
        state, want = dec.grammar.start(), 0.0
        for i, t in enumerate(ids):
            mask = torch.from_numpy(state.allowed_mask().copy())
            row = canonical_logits(logits[len(q.prompt_ids) + i - 1][None, :len(mask)], [state])[0]
            lp = torch.log_softmax(row.masked_fill(~mask, float("-inf")), -1)
            want += float(lp[t])
            state = state.advance(t)
        assert got == pytest.approx(want, abs=1e-4)
    assert len(dec.rows) == 1  # the temporary forks are gone
    with pytest.raises(Exception, match="not allowed"):
        dec.continuation_logprob(0, b'[{"name": "nope"')
    # the canonical path makes a second call far likelier than the forced "}}" token did
    go_on = dec.continuation_logprob(0, prefix + b'}}, {"') - dec.continuation_logprob(0, prefix + b"}}]")
    close2 = vocab.longest_match(b"}}")
    lo, lc = dec.continuations_logprob(0, [vocab.canonical(prefix) + close2 + vocab.canonical(b', {"'),
                                           vocab.canonical(prefix) + close2 + vocab.canonical(b"]")])
    assert go_on > lo - lc


def test_greedy_token_ids_are_the_tokenizers_own(policy):
    """Result.token_ids spell the output, and on these cases they are exactly the
    tokenizer's encoding of the text (stats["canonical"])."""
    tools = [{"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"},
                                         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}]
    for q in ("What's the weather in Paris, in celsius?", "Weather in Rome and in Oslo?", "Tell me a joke."):
        r = engine.generate(q, tools, model=policy, strategy="greedy", max_new_tokens=96)
        assert policy.tokenizer.decode(r.token_ids) == r.text
        assert r.stats["canonical"] is True
        assert r.token_ids == policy.tokenizer.encode(r.text, add_special_tokens=False)
