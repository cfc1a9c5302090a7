"""The PRM head, its checkpoint I/O, the scorers, and the shipped checkpoint."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from toolprm.engine.query import Query
from toolprm.engine.search import Candidate
from toolprm.errors import GenerationError, ToolprmError
from toolprm.grammar import StepEvent
from toolprm.reward import PRM, BackbonePRM, PRMHead, PRMScorer, load, load_prm, save
from toolprm.grammar import STEP_KINDS as KINDS
from toolprm.reward.prm import N_EXTRA, SHIPPED, extra_features, feature_matrix

D = 8


#: One tool and the events of one call to it, ``[{"name": "f", "arguments": {"a": 1``.
F_TOOLS = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {
    "a": {"type": "integer"}}}}]
F_CALL = '[{"name": "f", "arguments": {"a": 1'
F_EVENTS = (StepEvent("name", 0, None, '"f"', "f", 13), StepEvent("key", 0, "a", '"a"', "a", 32),
            StepEvent("value", 0, "a", "1", 1, len(F_CALL)))


def _cand(kind="value", hidden=None, text='[{"name": "f", "arguments": {"a": 1', logprob=-0.5, tokens=2):
    ev = StepEvent(kind, 0, "a" if kind in ("key", "value") else None, "1", 1, len(text))
    return Candidate(text, (ev,), logprob, tokens, logprob, hidden, kind == "end")


def _prm(head="mlp", d=D, seed=0, pca=0) -> PRM:
    torch.manual_seed(seed)
    return PRM(PRMHead(d + N_EXTRA, head, 16, pca=pca), {"backbone": {"kind": "policy", "name": "test"},
                                                "command": "test", "seed": seed})


def test_extra_features():
    f = extra_features("key", -2.0, 4, 5)
    assert f[:4] == [0, 1, 0, 0] and f[4] == -0.5 and f[5] == 0 and f[6] == 1.0
    assert extra_features("end", 0.0, 0, 0)[5] == 1.0
    x = feature_matrix(np.ones((2, D)), ["name", "end"], [-1, -1], [1, 1], [0, 1])
    assert x.shape == (2, D + N_EXTRA)


@pytest.mark.parametrize("head,pca", [("linear", 0), ("mlp", 0), ("mlp", 3)])
def test_save_load_roundtrip(tmp_path, head, pca):
    prm = _prm(head, pca=pca)
    x = np.random.default_rng(0).normal(size=(50, D + N_EXTRA)).astype(np.float32)
    prm.head.set_standardization(x)
    prm.head.kind_bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.4]))
    save(prm, tmp_path)
    again = load(tmp_path)
    assert np.allclose(prm.predict(x), again.predict(x))
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["architecture"]["head"] == head and man["architecture"]["pca"] == pca and man["seed"] == 0
    if pca:  # the projected hidden state has unit variance on the training features
        z = (torch.from_numpy(x[:, :D]) - prm.head.mean[:D]) / prm.head.std[:D]
        assert torch.allclose((z @ prm.head.proj).std(0, unbiased=False), torch.ones(pca), atol=1e-3)


def test_kind_bias_shifts_the_logit_of_its_kind_only():
    prm = _prm()
    x = feature_matrix(np.zeros((4, D)), list(KINDS), [-1] * 4, [1] * 4, [0] * 4)
    before = prm.predict(x)
    prm.head.kind_bias.copy_(torch.tensor([0.0, 0.0, 2.0, 0.0]))
    after = prm.predict(x)
    assert after[2] > before[2] and np.allclose(np.delete(after, 2), np.delete(before, 2))


def test_scorer_uses_candidate_hidden():
    prm = _prm()
    s = PRMScorer(prm)
    assert s.needs_hidden
    ctx = Query([{"role": "user", "content": "q"}], [], [1, 2])
    h1, h2 = torch.zeros(D), torch.ones(D) * 3
    scores = s.score(ctx, [_cand(hidden=h1), _cand(hidden=h2), _cand("end", hidden=h1)])
    assert len(scores) == 3 and all(0 < v < 1 for v in scores)
    assert scores[0] != scores[1]
    assert s.score(ctx, []) == []
    with pytest.raises(GenerationError, match="hidden states"):
        s.score(ctx, [_cand(hidden=None)])
    with pytest.raises(GenerationError, match="size"):
        s.score(ctx, [_cand(hidden=torch.zeros(D + 1))])


def test_score_is_the_product_of_the_step_scores():
    prm = _prm()
    s = PRMScorer(prm)
    tools, text, evs = F_TOOLS, F_CALL, F_EVENTS
    ctx = Query([{"role": "user", "content": "call f with 1"}], tools, [])
    hs = [torch.full((D,), float(i)) for i in range(3)]
    steps = [(-0.1, 1), (0.0, 0), (-0.7, 2)]

    def cand(n):
        return Candidate(text[:evs[n - 1].offset], evs[:n], steps[n - 1][0], steps[n - 1][1], -1.0,
                         hs[n - 1], False, tuple(hs[:n]), tuple(steps[:n]))

    one, two, three = s.score(ctx, [cand(1), cand(2), cand(3)])
    assert 0 < three < two < one < 1
    # each step multiplies the prefix's score by that step's own score
    from toolprm.reward.features import ToolIndex
    from toolprm.reward.prm import _step_rows
    p = prm.predict(np.array(_step_rows(cand(3), hs, ToolIndex(ctx.messages, tools)), dtype=np.float32))
    assert (one, two, three) == pytest.approx((p[0], p[0] * p[1], p[0] * p[1] * p[2]))
    # the hybrid: a value step's factor is the policy's confidence in its tokens instead
    hybrid = PRMScorer(prm, values="policy").score(ctx, [cand(1), cand(2), cand(3)])
    assert hybrid == pytest.approx([p[0], p[0] * p[1], p[0] * p[1] * math.exp(-0.7 / 2)])
    with pytest.raises(ToolprmError, match="values must be one of"):
        PRMScorer(prm, values="oracle")
    with pytest.raises(ToolprmError, match="incompatible"):
        d = _save(prm)
        man = json.loads((d / "manifest.json").read_text())
        man["architecture"]["format"] = "old"
        (d / "manifest.json").write_text(json.dumps(man))
        load(d)


def test_ends_read_by_the_policy_cost_the_odds_against_its_preferred_choice(monkeypatch):
    """ends="policy": after a call, closing and calling again are factors of the
    policy's probability over the likeliest sibling's; other steps keep the head's."""
    prm = _prm()
    call, evs = F_CALL, F_EVENTS
    ctx = Query([{"role": "user", "content": "call f with 1 and 2"}], F_TOOLS, [])
    close = call + "}}]"
    again = call + '}}, {"name": "f"'
    h = torch.zeros(D)

    def cand(text, ev, lp):
        events = evs + (ev,)
        steps = ((-0.1, 1), (0.0, 0), (-0.2, 1), (lp, 3))
        return Candidate(text, events, lp, 3, -1.0, h, ev.kind == "end", (h,) * 4, steps)

    c_close = cand(close, StepEvent("end", 1, None, "]", [{"name": "f", "arguments": {"a": 1}}], len(close)),
                   math.log(0.3))
    c_again = cand(again, StepEvent("name", 1, None, '"f"', "f", len(again)), math.log(0.6))
    head = PRMScorer(prm).score(ctx, [c_close, c_again])
    prefix = PRMScorer(prm).score(ctx, [Candidate(call, evs, -0.2, 1, -1.0, h, False, (h,) * 3,
                                                  ((-0.1, 1), (0.0, 0), (-0.2, 1)))])[0]
    s = PRMScorer(prm, ends="policy")
    scored = s.score(ctx, [c_close, c_again])
    assert scored == pytest.approx([prefix * 0.5, prefix * 1.0])
    assert head != pytest.approx(scored)  # the head read those steps itself
    # scored alone later (a descendant re-reads its prefix), the step keeps its odds
    assert s.score(ctx, [c_close]) == pytest.approx([prefix * 0.5])
    with pytest.raises(ToolprmError, match="ends must be one of"):
        PRMScorer(prm, ends="oracle")
    from toolprm.engine.models import Policy
    from toolprm.reward import prm as reward_prm
    # the shipped choice (results/qwen15-live-ends/RULE.md): the 1.5B policy reads its own ends
    assert reward_prm.ends_reader("auto", Policy(None, None, "qwen2.5-coder-1.5b")) == "policy"
    assert reward_prm.ends_reader("auto", Policy(None, None, "qwen2.5-coder-0.5b")) == "head"
    monkeypatch.setattr(reward_prm, "POLICIES_READING_ENDS", frozenset({"qwen2.5-coder-0.5b"}))
    assert reward_prm.ends_reader("auto", Policy(None, None, "Qwen2.5-Coder-0.5B")) == "policy"
    assert reward_prm.ends_reader("auto", Policy(None, None, "smollm2")) == "head"
    assert reward_prm.ends_reader("auto", None) == "head" and reward_prm.ends_reader("policy", None) == "policy"


def test_keys_read_by_the_policy_cost_the_odds_against_its_preferred_key():
    """keys="policy": which parameter comes next is a factor of the policy's probability
    over the likeliest sibling key's; the name before it keeps the head's score, and
    keys="head" (the default) leaves the key to the head."""
    prm = _prm()
    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {
        "location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}}}]
    ctx = Query([{"role": "user", "content": "weather in Boston"}], tools, [])
    name = StepEvent("name", 0, None, '"f"', "f", 13)
    h = torch.zeros(D)

    def cand(key, lp):
        text = '[{"name": "f", "arguments": {' + f'"{key}"'
        return Candidate(text, (name, StepEvent("key", 0, key, f'"{key}"', key, len(text))), lp, 2, -1.0,
                         h, False, (h, h), ((-0.1, 1), (lp, 2)))

    first, second = cand("location", math.log(0.8)), cand("unit", math.log(0.2))
    alone = PRMScorer(prm).score(ctx, [Candidate('[{"name": "f"', (name,), -0.1, 1, -1.0, h, False,
                                                 (h,), ((-0.1, 1),))])[0]
    s = PRMScorer(prm, keys="policy")
    assert s.score(ctx, [first, second]) == pytest.approx([alone * 1.0, alone * 0.25])
    assert PRMScorer(prm).score(ctx, [first, second]) != pytest.approx([alone, alone * 0.25])
    assert s.score(ctx, [second]) == pytest.approx([alone * 0.25])  # re-read alone, keeps its odds
    with pytest.raises(ToolprmError, match="keys must be one of"):
        PRMScorer(prm, keys="auto")  # "auto" is resolved before a scorer is built
    from toolprm.engine.models import Policy
    from toolprm.reward import prm as reward_prm
    # the shipped choice (results/qwen15-live-keys/RULE.md): the 1.5B policy reads its own keys
    assert reward_prm.keys_reader("auto", Policy(None, None, "qwen2.5-coder-1.5b")) == "policy"
    for name_ in ("qwen2.5-coder-0.5b", "smollm2"):
        assert reward_prm.keys_reader("auto", Policy(None, None, name_)) == "head"
    assert reward_prm.keys_reader("auto", None) == "head"
    assert reward_prm.keys_reader("policy", None) == "policy"


def test_ends_read_by_the_text_reader_close_with_one_minus_p_and_go_on_with_p():
    """ends="text": closing gets 1 − P(more) from the text end reader, calling again
    P(more) times the head's score of the tool over the best sibling tool's (1 here:
    one tool); the steps before keep the head's scores."""
    from toolprm.reward.ends import load_end_reader
    from toolprm.reward.features import ToolIndex

    prm = _prm()
    call, evs = F_CALL, F_EVENTS
    ctx = Query([{"role": "user", "content": "call f with 1 and 2"}], F_TOOLS, [])
    h = torch.zeros(D)
    steps = ((-0.1, 1), (0.0, 0), (-0.2, 1), (-0.5, 3))
    close, again = call + "}}]", call + '}}, {"name": "f"'
    c_close = Candidate(close, evs + (StepEvent("end", 1, None, "]", [{"name": "f", "arguments": {"a": 1}}],
                                                len(close)),), -0.5, 3, -1.0, h, True, (h,) * 4, steps)
    c_again = Candidate(again, evs + (StepEvent("name", 1, None, '"f"', "f", len(again)),), -0.5, 3, -1.0, h,
                        False, (h,) * 4, steps)
    prefix = PRMScorer(prm).score(ctx, [Candidate(call, evs, -0.2, 1, -1.0, h, False, (h,) * 3, steps[:3])])[0]
    p_more = load_end_reader().p_more(ToolIndex(ctx.messages, ctx.tools), [{"name": "f", "arguments": {"a": 1}}])
    assert 0 < p_more < 1
    s = PRMScorer(prm, ends="text")
    assert s.score(ctx, [c_close, c_again]) == pytest.approx([prefix * (1 - p_more), prefix * p_more])
    assert s.score(ctx, [c_close]) == pytest.approx([prefix * (1 - p_more)])  # re-read alone


def test_one_scorer_reads_each_querys_own_tools():
    """A scorer reused across queries indexes each query's tools, even when the
    next query object takes the freed one's id (same message and tool counts):
    with nothing allocated between freeing one and making the next, CPython hands
    the next the same address."""
    s = PRMScorer(_prm())
    specs = [([{"role": "user", "content": f"use {n}"}],
              [{"name": n, "description": n, "parameters": {"type": "object", "properties": {}}}])
             for n in ("alpha", "beta", "gamma")]
    cand = _cand(hidden=torch.zeros(D))
    seen = []
    for messages, tools in specs:
        ctx = Query(messages, tools, [])
        s.score(ctx, [cand])
        seen.append((id(ctx), list(s._index.get(ctx).tools)))
        del ctx
    assert [t for _, t in seen] == [["alpha"], ["beta"], ["gamma"]]


def test_load_errors(tmp_path):
    with pytest.raises(ToolprmError, match="no PRM checkpoint"):
        load(tmp_path)


def test_backbone_prm_with_a_tiny_causal_lm(bpe_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=D, intermediate_size=16,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    prm = _prm()
    bp = load_prm(_save(prm), backbone=(model, bpe_tokenizer))
    assert isinstance(bp, BackbonePRM) and not bp.needs_hidden
    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]
    ctx = Query([{"role": "user", "content": "call f"}], tools, [])
    texts = ['[{"name": "f"', '[{"name": "f", "arguments": {"a": 1']
    cands = [_cand(text=t) for t in texts]
    scores = bp.score(ctx, cands)
    assert len(scores) == 2 and all(0 < v < 1 for v in scores)
    # the batched, cached hidden state equals a plain forward over prompt + partial output
    ids = bp.prompt_ids(ctx.messages, tools)
    hid = bp.hidden_states(ids, texts)
    for t, h in zip(texts, hid):
        full = ids + bpe_tokenizer(t, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            ref = model(torch.tensor([full]), output_hidden_states=True).hidden_states[-1][0, -1]
        assert np.allclose(h, ref.numpy(), atol=1e-4)
    with pytest.raises(ToolprmError, match="hidden size"):
        BackbonePRM(_prm(d=D + 2), model, bpe_tokenizer)


_SAVED: list = []


def _save(prm) -> Path:
    import tempfile
    d = Path(tempfile.mkdtemp())
    save(prm, d)
    _SAVED.append(d)
    return d


# --------------------------------------------------------------------------- shipped checkpoint

def test_shipped_checkpoint():
    if not (SHIPPED / "model.safetensors").exists():
        pytest.skip("no shipped checkpoint yet")
    size = (SHIPPED / "model.safetensors").stat().st_size
    assert size <= 20 * 1024 * 1024
    man = json.loads((SHIPPED / "manifest.json").read_text())
    for k in ("data", "command", "seed", "metrics", "backbone", "architecture"):
        assert k in man, k
    assert man["backbone"]["kind"] == "policy" and man["backbone"]["hidden_size"] == 576
    s = load_prm()
    assert isinstance(s, PRMScorer) and s.needs_hidden
    out = s.score(Query([], [], []), [_cand(hidden=torch.zeros(576)), _cand("end", hidden=torch.ones(576))])
    assert all(0 <= v <= 1 for v in out)
    # metrics quoted in the manifest are the validation metrics of this checkpoint
    assert "steps" in man["metrics"] and "all" in man["metrics"]["steps"]


def test_text_features_on_a_hand_made_query():
    """reward/features.py's values, worked out by hand for one query and two tools."""
    from types import SimpleNamespace as Ev

    from toolprm.reward.features import TEXT_FEATURES, ToolIndex, text_features
    tools = [
        {"name": "get_weather", "description": "Current weather for a city", "parameters": {
            "type": "object", "required": ["city"], "properties": {
                "city": {"type": "string", "description": "The city name"},
                "unit": {"type": "string", "description": "Temperature unit", "default": "celsius"},
                "days": {"type": "integer", "description": "Number of days"}}}},
        {"name": "book_flight", "description": "Book a flight", "parameters": {
            "type": "object", "required": ["origin"], "properties": {
                "origin": {"type": "string", "description": "Origin city"}}}}]
    index = ToolIndex([{"role": "user", "content": "What's the weather in San Diego for 3 days?"}], tools)
    # the query's words (stop words and one-letter words dropped): weather, san, diego, days;
    # get_weather's words meet two of them, book_flight's none
    assert index.sim == {"get_weather": 0.5, "book_flight": 0.0}

    def feats(*events):
        return dict(zip(TEXT_FEATURES, text_features(index, [Ev(kind=k, call=0, key=key, value=v)
                                                             for k, key, v in events])))

    name = ("name", None, "get_weather")
    city = [("key", "city", "city"), ("value", "city", "San Diego")]
    f = feats(name, *city)
    assert f["value_grounded"] == 1.0 and f["key_required"] == 1.0
    assert f["string_length"] == pytest.approx(0.09)
    assert (f["value_word_share"], f["value_is_phrase"]) == (1.0, 1.0)
    assert f["unused_query_numbers"] == 0.25                    # "3" not used yet
    assert f["optional_count"] == pytest.approx(2 / 6)
    assert f["optional_unset_share"] == 1.0                    # unit and days unset
    assert f["optional_unset_mentioned"] == 0.25               # "days" is in the query
    assert (f["tool_similarity"], f["tool_is_best"], f["tool_margin"]) == (0.5, 1.0, 0.0)
    assert f["one_over_tools"] == 0.5 and f["calls_so_far"] == 0.25
    f = feats(name, *city, ("key", "days", "days"), ("value", "days", 3))
    assert f["value_grounded"] == 1.0 and f["key_required"] == 0.0
    assert f["values_so_far"] == 0.25 and f["unused_query_numbers"] == 0.0
    assert f["optional_unset_share"] == 0.5 and f["optional_unset_mentioned"] == 0.0
    assert (f["value_word_share"], f["string_length"]) == (0.0, 0.0)
    f = feats(name, ("key", "city", "city"), ("value", "city", "Diego San"))
    assert (f["value_word_share"], f["value_is_phrase"]) == (1.0, 0.0)  # the words, not the phrase
    assert f["value_grounded"] == 0.0
    f = feats(name, ("key", "unit", "unit"), ("value", "unit", "celsius"))
    assert f["value_is_default"] == 1.0 and f["value_grounded"] == 0.0
    f = feats(("name", None, "book_flight"))
    assert (f["tool_similarity"], f["tool_is_best"], f["tool_margin"]) == (0.0, 0.0, -0.5)
    f = feats(name, *city, ("end", None, None))
    assert f["closed_calls_complete"] == 1.0 and f["empty_list"] == 0.0
    f = feats(name, ("end", None, None))   # get_weather closed without its required city
    assert f["closed_calls_complete"] == 0.0
    f = feats(("end", None, None))
    assert f["empty_list"] == 1.0 and f["calls_so_far"] == 0.0
    assert feats(("name", None, "nope"))["unknown_tool"] == 1.0


def test_default_scorer_reads_the_policy_it_was_trained_on(bpe_tokenizer):
    """generate()'s default scorer: for the default SmolLM2 policy the shipped head
    reads the policy's own hidden states (PRMScorer, no extra pass); for any other
    policy it runs the shipped backbone itself (BackbonePRM over SmolLM2), whatever
    the other policy's hidden size. load_prm(backbone=name) loads that backbone by name."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from toolprm.engine.models import get_policy, make_policy
    from toolprm.reward.prm import default_scorer
    smollm2 = get_policy()
    assert isinstance(default_scorer(), PRMScorer) and isinstance(default_scorer(smollm2), PRMScorer)
    cfg = LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=D, intermediate_size=16,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    other = make_policy(LlamaForCausalLM(cfg).eval(), bpe_tokenizer, "tiny", "float32")
    scorer = default_scorer(other)
    assert isinstance(scorer, BackbonePRM)
    assert scorer.model is smollm2.model and scorer.prm.hidden_size == smollm2.model.config.hidden_size
    named = load_prm(SHIPPED, backbone="smollm2")
    assert isinstance(named, BackbonePRM) and named.prm.hidden_size == smollm2.model.config.hidden_size
    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]
    ctx = Query([{"role": "user", "content": "call f"}], tools, [])
    (a,), (b,) = scorer.score(ctx, [_cand(text='[{"name": "f"')]), named.score(ctx, [_cand(text='[{"name": "f"')])
    assert 0 < a < 1 and a == pytest.approx(b, abs=1e-5)  # one backbone, one head: one score


# --------------------------------------------------------------------------- [] calibration


def _sets(rows):
    """Walk records: per query a first-step set with [] and two names (and a copy of
    it from a second walk, which must count once)."""
    out = []
    for i, (cat, empty, names) in enumerate(rows):
        cands = [{"text": "[]", "kind": "end", "label": int(cat == "live_irrelevance"), "events": [],
                  "scores": {"prm": empty}}]
        cands += [{"text": f"[{{\"name\": \"f{j}\"", "kind": "name", "label": 0, "events": [],
                   "scores": {"prm": n}} for j, n in enumerate(names)]
        for walk in ("policy", "random"):
            out.append({"query": f"q{i}", "category": cat, "walk": walk, "parent": "", "candidates": cands})
    return out


def test_calibration_is_chosen_by_balanced_accuracy_and_read_back(tmp_path):
    from toolprm.train import calibrate
    from toolprm.reward.prm import CALIBRATION, shifted

    # logit(0.2) + log 4 = logit(0.5): odds x4 (and no less) lifts the irrelevant query's
    # [] over its best name (0.49); x5 would also send the relevant q2 ([] 0.1 becomes
    # 0.357, against 0.35) to []
    rows = [("live_irrelevance", 0.2, [0.49, 0.1]), ("live_simple", 0.05, [0.9, 0.2]),
            ("live_multiple", 0.1, [0.35, 0.3])]
    first = calibrate.first_step_rows(_sets(rows))
    assert len(first) == 3
    best, table = calibrate.choose(first)
    assert best["odds"] == pytest.approx(4.0) and best["balanced_accuracy"] == 1.0
    assert shifted(0.2, best["log_odds"]) == pytest.approx(0.5)
    with pytest.raises(ToolprmError, match="both irrelevant and relevant"):
        calibrate.choose(first[1:])

    # written next to a head, read back by load(), and applied to [] only
    prm = _prm()
    folder = tmp_path / "ckpt"
    save(prm, folder)
    walks = tmp_path / "walks"
    walks.mkdir()
    (walks / "sets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _sets(rows)))
    report = tmp_path / "cal.md"
    assert calibrate.main(["--walks", str(walks), "--checkpoint", str(folder), "--report", str(report)]) == 0
    assert "| ×4.00 (chosen) | 1/1 | 0/2 | 1.000 |" in report.read_text()
    loaded = load(folder)
    assert loaded.empty_log_odds == pytest.approx(math.log(4.0))
    ctx = Query([{"role": "user", "content": "q"}], [], [])
    empty = Candidate("[]", (StepEvent("end", 0, None, "]", [], 2),), -1.0, 1, -1.0, torch.zeros(D), True,
                      (torch.zeros(D),), ((-1.0, 1),))
    name = _cand("name", hidden=torch.zeros(D))
    raw = PRMScorer(prm).score(ctx, [empty, name])
    cal = PRMScorer(loaded).score(ctx, [empty, name])
    assert cal[0] == pytest.approx(shifted(raw[0], math.log(4.0))) and cal[1] == pytest.approx(raw[1])

    # new weights drop it; a calibration for other weights is refused
    stale = json.loads((folder / CALIBRATION).read_text())
    save(_prm(seed=1), folder)
    assert not (folder / CALIBRATION).exists() and load(folder).empty_log_odds == 0.0
    (folder / CALIBRATION).write_text(json.dumps(stale))
    with pytest.raises(ToolprmError, match="fit for other weights"):
        load(folder)
    # test categories are refused as calibration data
    (walks / "sets.jsonl").write_text(json.dumps({**_sets(rows)[0], "category": "irrelevance"}) + "\n")
    with pytest.raises(ToolprmError, match="live queries only"):
        calibrate.main(["--walks", str(walks), "--checkpoint", str(folder)])
