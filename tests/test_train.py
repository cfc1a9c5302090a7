"""PRM data and training: step labels on hand-checked BFCL cases, function masking,
the train/test split guard, and a quick end-to-end train on a small real slice."""
from __future__ import annotations

import json
import random
import re
from types import SimpleNamespace as E

import numpy as np
import pytest
import torch

from toolprm.bfcl import Case, check, ground_truth_calls, load_cases
from toolprm.errors import ToolprmError
from toolprm.train.labels import chain, label_balance, prefix_correct, step_labels
from toolprm.train.masking import mask_case


def case_by_id(category: str, cid: str) -> Case:
    return next(c for c in load_cases(category) if c.id == cid)


def name(v, call=0):
    return E(kind="name", call=call, key=None, value=v)


def key(k, call=0):
    return E(kind="key", call=call, key=k, value=k)


def val(k, v, call=0):
    return E(kind="value", call=call, key=k, value=v)


def end(calls):
    return E(kind="end", call=len(calls), key=None, value=calls)


def events_of(calls, close=True):
    out = []
    for i, c in enumerate(calls):
        out.append(name(c["name"], i))
        for k, v in c["arguments"].items():
            out += [key(k, i), val(k, v, i)]
    if close:
        out.append(end(calls))
    return out


# --------------------------------------------------------------------------- labels

def test_labels_simple_right_and_wrong_value():
    # live_simple_0-0-0: get_user_info(user_id=7890, special="black"), both required
    c = case_by_id("live_simple", "live_simple_0-0-0")
    good = [{"name": "get_user_info", "arguments": {"user_id": 7890, "special": "black"}}]
    assert step_labels(c, events_of(good)) == [1, 1, 1, 1, 1, 1]
    # string normalization: case and spaces do not matter to BFCL
    norm = [{"name": "get_user_info", "arguments": {"user_id": 7890, "special": " Black"}}]
    assert step_labels(c, events_of(norm))[-1] == check(c, norm).correct
    wrong = [{"name": "get_user_info", "arguments": {"user_id": 7890, "special": "white"}}]
    assert step_labels(c, events_of(wrong)) == [1, 1, 1, 1, 0, 0]
    # closing before the required "special" is given: the end step is wrong
    short = [{"name": "get_user_info", "arguments": {"user_id": 7890}}]
    assert step_labels(c, events_of(short)) == [1, 1, 1, 0]
    # an int where an int is expected, but the wrong one
    assert step_labels(c, [name("get_user_info"), key("user_id"), val("user_id", 7891)]) == [1, 1, 0]


def test_labels_int_for_float_and_optional_keys():
    # live_simple_39-16-0: latitude/longitude are floats; url/units/language optional ("" allowed)
    c = case_by_id("live_simple", "live_simple_39-16-0")
    evs = [name("fetch_weather_data"), key("latitude"), val("latitude", 37.8651),
           key("longitude"), val("longitude", -119.5383)]
    assert step_labels(c, evs) == [1] * 5
    # optional key with an acceptable value, then one with a wrong value
    evs2 = evs + [key("units"), val("units", "metric"), key("language"), val("language", "fr")]
    assert step_labels(c, evs2) == [1] * 7 + [1, 0]
    # the optional key "url" omitted: closing is right
    calls = [{"name": "fetch_weather_data", "arguments": {"latitude": 37.8651, "longitude": -119.5383}}]
    assert step_labels(c, events_of(calls))[-1] == 1
    # BFCL accepts an int for a float parameter (Python auto-conversion)
    c48 = case_by_id("live_simple", "live_simple_48-21-0")
    assert step_labels(c48, [name("find_beer"), key("abv_min"), val("abv_min", 0)]) == [1, 1, 1]
    # a key the answer sets, with its value: right
    assert step_labels(c48, [name("find_beer"), key("brewery"), val("brewery", "Sierra Nevada")]) == [1, 1, 1]
    # a key the answer never sets is wrong, though the schema allows it: live_multiple_1048-275-0's
    # answer is Hotels_2_SearchHouse(where_to="Paris", number_of_adults=2); "rating" and
    # "has_laundry_service" are optional in the schema and absent from the answer
    c1048 = case_by_id("live_multiple", "live_multiple_1048-275-0")
    (fn, args), = c1048.ground_truth[0].items()
    tool = next(t for t in c1048.tools if t["name"] == fn)
    assert fn == "Hotels_2_SearchHouse" and {"rating", "has_laundry_service"} <= (
        set(tool["parameters"]["properties"]) - set(args) - set(tool["parameters"]["required"]))
    assert step_labels(c1048, [name(fn), key("where_to"), val("where_to", "Paris")]) == [1, 1, 1]
    for k, v in (("rating", 4.5), ("has_laundry_service", "True")):
        assert step_labels(c1048, [name(fn), key(k), val(k, v)]) == [1, 0, 0], k
        # also after a right key/value pair, and BFCL's checker agrees on the whole call
        assert step_labels(c1048, [name(fn), key("where_to"), val("where_to", "Paris"), key(k)]) == [1, 1, 1, 0]
        calls = [{"name": fn, "arguments": {"where_to": "Paris", "number_of_adults": 2, k: v}}]
        assert step_labels(c1048, events_of(calls))[-1] == 0 == check(c1048, calls).correct


def test_labels_parallel_any_order_no_repeats():
    # live_parallel_3-0-3: get_current_weather for Cancún, Playa del Carmen and Tulum
    c = case_by_id("live_parallel", "live_parallel_3-0-3")
    gt = ground_truth_calls(c)
    assert step_labels(c, events_of(gt)) == [1] * len(events_of(gt))
    rev = list(reversed(gt))
    assert all(step_labels(c, events_of(rev)))
    assert check(c, rev).correct
    # the same city twice: the second value is wrong
    twice = [gt[0], gt[0]]
    labels = step_labels(c, events_of(twice, close=False))
    assert labels[:3] == [1, 1, 1] and labels[-1] == 0
    # closing the list after two of three calls
    assert step_labels(c, events_of(gt[:2]))[-1] == 0
    # optional "unit": fahrenheit is acceptable, celsius is not
    f = [name("get_current_weather"), key("location"), val("location", "Tulum, QR"),
         key("unit"), val("unit", "fahrenheit")]
    assert step_labels(c, f) == [1] * 5
    f[-1] = val("unit", "celsius")
    assert step_labels(c, f) == [1, 1, 1, 1, 0]


def test_labels_multiple_one_call_only():
    c = load_cases("live_multiple", 1)[0]
    gt = ground_truth_calls(c)
    assert all(step_labels(c, events_of(gt)))
    other = next(t["name"] for t in c.tools if t["name"] != gt[0]["name"]) if len(c.tools) > 1 else None
    if other:
        assert step_labels(c, [name(other)]) == [0]
    # a second call where the answer has one: its name is wrong
    labels = step_labels(c, events_of(gt + gt))
    n = len(events_of(gt, close=False))
    assert labels[:n] == [1] * n and labels[n] == 0 and labels[-1] == 0


def test_labels_irrelevance():
    c = load_cases("live_irrelevance", 1)[0]
    assert step_labels(c, [end([])]) == [1]
    tool = c.tools[0]["name"]
    assert step_labels(c, [name(tool), end([{"name": tool, "arguments": {}}])]) == [0, 0]


def test_labels_stay_negative_after_a_wrong_step():
    c = case_by_id("live_simple", "live_simple_0-0-0")
    evs = [name("get_user_info"), key("user_id"), val("user_id", 1), key("special"), val("special", "black")]
    assert step_labels(c, evs) == [1, 1, 0, 0, 0]


def test_ground_truth_is_positive_on_a_spread_of_live_cases():
    from toolprm.bfcl import KNOWN_UNSATISFIABLE, TRAIN_CATEGORIES
    for cat in TRAIN_CATEGORIES:
        for c in load_cases(cat, 25):
            if c.id in KNOWN_UNSATISFIABLE:
                continue
            gt = ground_truth_calls(c)
            labels = step_labels(c, events_of(gt))
            assert labels == [1] * len(labels), (c.id, labels)


def test_prefix_correct_and_chain_follow_each_rollout():
    # two rollouts, rows out of order: (query, rollout, step, label)
    rows = [("q", 0, 1, 0), ("q", 1, 0, 1), ("q", 0, 0, 1), ("q", 0, 2, 0), ("q", 1, 1, 1)]
    recs = [{"query": q, "rollout": r, "step": st, "label": y} for q, r, st, y in rows]
    assert prefix_correct(recs) == [True, True, True, False, True]
    assert chain(recs, [0.5, 0.9, 0.8, 0.5, 0.5]) == pytest.approx([0.4, 0.9, 0.8, 0.2, 0.45])


def test_sibling_ranking_compares_steps_that_extend_the_same_prefix():
    from toolprm.train.evaluate import sibling_ranking
    # two rollouts share the name step, then differ at the value: one sibling pair
    rows = [("q", 0, 0, "[n", 1, 0.9), ("q", 0, 1, "[n v1", 1, 0.8),
            ("q", 1, 0, "[n", 1, 0.9), ("q", 1, 1, "[n v2", 0, 0.3),
            ("q", 2, 0, "[m", 0, 0.95)]  # a wrong name ranked above the right one
    recs = [{"query": q, "rollout": r, "step": st, "partial": pa, "label": y} for q, r, st, pa, y, _ in rows]
    scores = [sc for *_, sc in rows]
    assert sibling_ranking(recs, scores, [True] * 5) == (2, 0.5)
    assert sibling_ranking(recs, scores, [True, True, True, True, False]) == (1, 1.0)
    assert sibling_ranking(recs, scores, [False] * 5) == (0, None)


def test_label_balance():
    recs = [{"kind": "name", "label": 1}, {"kind": "name", "label": 0}, {"kind": "end", "label": 1}]
    b = label_balance(recs)
    assert b["name"] == {"n": 2, "pos": 1, "pos_rate": 0.5} and b["all"]["n"] == 3


# --------------------------------------------------------------------------- masking

@pytest.mark.parametrize("category", ["live_simple", "live_multiple", "live_parallel",
                                      "live_parallel_multiple", "live_irrelevance"])
def test_masking_is_consistent(category):
    rng = random.Random(0)
    for c in load_cases(category, 12):
        m, mapping = mask_case(c, rng)
        names = [t["name"] for t in m.tools]
        assert len(set(names)) == len(names)
        assert not set(names) & {t["name"] for t in c.tools}
        for t, t0 in zip(m.tools, c.tools):
            assert t["description"] == t0["description"]
            assert 5 <= len(t["name"]) <= 15
            props = t["parameters"].get("properties", {})
            props0 = t0["parameters"].get("properties", {})
            assert list(props.values()) == list(props0.values())   # types and descriptions kept
            assert all(4 <= len(k) <= 10 for k in props)
            assert set(t["parameters"].get("required", [])) <= set(props)
        for answer in m.ground_truth:
            (fn, args), = answer.items()
            tool = next(t for t in m.tools if t["name"] == fn)
            assert set(args) <= set(tool["parameters"]["properties"])
        # the renamed answer is still right under BFCL's checker, on the renamed case
        if c.ground_truth and c.id not in ("live_simple_106-63-0", "live_simple_112-68-0"):
            assert check(m, ground_truth_calls(m)).correct == check(c, ground_truth_calls(c)).correct
        # the messages: every verbatim (whole-word) mention of a function name of 4+ characters
        # is replaced by its new name, but inside a value the answer copies ('todo random' in
        # live_parallel_8-4-0), and nothing else changes (renaming back gives the original)
        renamed = {o: n for o, n in mapping["functions"].items() if len(o) >= 4}
        copied = [v for a in c.ground_truth for args in a.values() for vs in args.values()
                  for v in (vs if isinstance(vs, list) else [vs]) if isinstance(v, str) and v]
        for msg0, msg in zip(c.messages, m.messages, strict=True):
            text0, text = msg0["content"], msg["content"]
            back = text
            for fn_old, fn_new in sorted(renamed.items(), key=lambda kv: -len(kv[1])):
                whole = r"(?<![\w.])" + re.escape(fn_old) + r"(?![\w])"
                outside0, outside = text0, text
                for v in (v for v in copied if fn_old in v):
                    outside0, outside = outside0.replace(v, ""), outside.replace(v, "")
                assert text.count(fn_new) == len(re.findall(whole, outside0)), (c.id, fn_old, fn_new, text)
                assert not re.search(whole, outside), (c.id, fn_old)
                back = back.replace(fn_new, fn_old)
            assert back == text0, c.id
    # the query's verbatim references are renamed too
    c = Case("live_simple_x", "live_simple", [{"role": "user", "content": "use get_weather for Paris"}],
             [{"name": "get_weather", "description": "d", "parameters": {"type": "dict", "properties": {
                 "city": {"type": "string", "description": "c"}}, "required": ["city"]}}],
             [{"get_weather": {"city": ["Paris"]}}])
    m, mapping = mask_case(c, random.Random(1))
    new = mapping["functions"]["get_weather"]
    assert m.messages[0]["content"] == f"use {new} for Paris"
    assert check(m, [{"name": new, "arguments": {mapping["params"]["get_weather"]["city"]: "Paris"}}]).correct
    # only whole names: not inside a longer identifier, and not names under 4 characters
    c = Case("live_simple_y", "live_simple",
             [{"role": "user", "content": "get_weather, not get_weather_v2, my.get_weather or sum"}],
             c.tools + [{"name": "sum", "description": "d", "parameters": {"type": "dict", "properties": {}}}],
             c.ground_truth)
    m, mapping = mask_case(c, random.Random(1))
    new = mapping["functions"]["get_weather"]
    assert m.messages[0]["content"] == f"{new}, not get_weather_v2, my.get_weather or sum"


# --------------------------------------------------------------------------- split guard

def test_pick_cases_only_live_and_split_by_query():
    from toolprm.bfcl import split_of
    from toolprm.train.data import DataConfig, pick_cases
    cases = pick_cases(DataConfig(queries=60))
    assert cases and all(c.category.startswith("live_") for c in cases)
    assert {c.category for c in cases} == {"live_simple", "live_multiple", "live_parallel",
                                           "live_parallel_multiple", "live_irrelevance"}
    with pytest.raises(ToolprmError):
        pick_cases(DataConfig(queries=5, mix={"simple_python": 1.0}))
    splits = {split_of(c.id, 0.2) for c in cases}
    assert splits == {"train", "val"}
    assert split_of("live_simple_0-0-0", 0.2) == split_of("live_simple_0-0-0", 0.2)


def test_load_refuses_test_ids(tmp_path):
    from toolprm.train.data import load
    rec = {"query": "simple_python_3", "query_id": "simple_python_3", "split": "train", "kind": "end",
           "label": 1}
    (tmp_path / "steps.jsonl").write_text(json.dumps(rec) + "\n")
    (tmp_path / "meta.json").write_text(json.dumps({"hidden_size": 4}))
    np.zeros((1, 4), np.float32).tofile(tmp_path / "hidden.f32")
    with pytest.raises(ToolprmError, match="test set"):
        load(tmp_path)


# --------------------------------------------------------------------------- quick train

def test_quick_train_on_a_real_slice(tmp_path, smollm2_wheel):
    """Rollouts with the real policy on a few live queries → labels → head → eval → scorer."""
    import torch

    from toolprm.engine import generate, get_policy
    from toolprm.reward import load_prm
    from toolprm.train.cli import main
    from toolprm.train.data import DataConfig, build
    from toolprm.train.evaluate import evaluate, markdown_table
    from toolprm.train.prm import TrainConfig, train

    torch.set_num_threads(1)
    data, ckpt = tmp_path / "data", tmp_path / "ckpt"
    cfg = DataConfig(queries=3, rollouts=3, max_new_tokens=48, max_prompt_tokens=600, val_share=0.5,
                     mix={"live_simple": 0.5, "live_irrelevance": 0.5}, seed=3)
    meta = build(data, cfg, progress=False)
    assert meta["n_steps"] > 0 and meta["n_queries"] >= 2
    steps = [json.loads(l) for l in (data / "steps.jsonl").read_text().splitlines()]
    assert {s["kind"] for s in steps} <= {"name", "key", "value", "end"}
    assert all(s["label"] in (0, 1) for s in steps)
    queries = [json.loads(l) for l in (data / "queries.jsonl").read_text().splitlines()]
    for q in queries:  # every split holds whole queries
        assert {s["split"] for s in steps if s["query"] == q["key"]} == {q["split"]}
    # the slice is seeded and the policy greedy/seeded: both labels occur, in both splits
    # (with seed=3: 30 train steps, 14 right; 12 val steps, 6 right)
    for split in ("train", "val"):
        assert {s["label"] for s in steps if s["split"] == split} == {0, 1}, split
    prm = train(data, ckpt, TrainConfig(epochs=3, hidden=16), command="test", progress=False)
    assert (ckpt / "model.safetensors").exists() and (ckpt / "manifest.json").exists()
    for split in ("train", "val"):
        rep = evaluate(data, ckpt, split=split)
        want = _metrics_by_hand(data, ckpt, split)
        got = rep["steps"]["all"]
        assert got["n"] == want["n"] and got["n"] == sum(s["split"] == split for s in steps)
        for k in ("pos_rate", "acc", "majority_acc", "auc"):
            assert got[k] == pytest.approx(want[k], abs=5e-5), (split, k, got[k], want[k])
        assert rep["trajectories"]["n"] == want["trajectories"]
        assert rep["trajectories"]["acc"] == pytest.approx(want["trajectory_acc"], abs=5e-5), split
    assert "| kind |" in markdown_table(rep)
    assert main(["eval", "--data", str(data), "--out", str(ckpt), "--no-progress"]) == 0
    # the trained head scores the policy's own hidden states inside the search
    scorer = load_prm(ckpt)
    assert scorer.needs_hidden
    _scorer_matches_training_features(data, ckpt, scorer)
    r = generate("What's the weather in Paris?", [{"name": "get_weather", "description": "Weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}}],
                 strategy="fine_beam", m=2, n=1, scorer=scorer, max_new_tokens=40)
    assert r.calls is not None
    # fine_beam ranks its candidates with the PRM: it was called, and every step it kept has a score
    assert r.stats["scorer_calls"] >= 1 and r.steps
    assert all(s["score"] is not None and 0.0 < s["score"] < 1.0 for s in r.steps), r.steps


def _metrics_by_hand(data, ckpt, split):
    """`train eval`'s step metrics over all kinds, computed here from the head's step
    scores: a step's score is the product of the step scores of its rollout up to it;
    accuracy at 0.5; the majority baseline is the training split's majority label per
    kind; AUC over all (right, wrong) pairs, ties half; a rollout is right when all its
    steps are."""
    from toolprm.reward.prm import load as load_checkpoint
    from toolprm.train.data import load as load_data
    from toolprm.train.features import features

    records, hidden, _ = load_data(data)
    step_scores = load_checkpoint(ckpt).predict(features(records, hidden, data))
    by_rollout: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        by_rollout.setdefault((r["query"], r["rollout"]), []).append(i)
    score = {}
    for idx in by_rollout.values():
        prod = 1.0
        for i in sorted(idx, key=lambda i: records[i]["step"]):
            prod *= float(step_scores[i])
            score[i] = prod
    rows = [i for i, r in enumerate(records) if r["split"] == split]
    y = {i: bool(records[i]["label"]) for i in range(len(records))}
    majority = {}
    for kind in {r["kind"] for r in records}:
        ys = [y[i] for i, r in enumerate(records) if r["split"] == "train" and r["kind"] == kind]
        majority[kind] = sum(ys) >= len(ys) / 2 if ys else True
    right = {i: (score[i] >= 0.5) == y[i] for i in rows}
    pos, neg = [score[i] for i in rows if y[i]], [score[i] for i in rows if not y[i]]
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg]
    rollouts = {k: [i for i in idx if i in right] for k, idx in by_rollout.items()}
    rollouts = {k: v for k, v in rollouts.items() if v}
    return {"n": len(rows), "pos_rate": len(pos) / len(rows), "acc": sum(right.values()) / len(rows),
            "majority_acc": sum(majority[records[i]["kind"]] == y[i] for i in rows) / len(rows),
            "auc": sum(pairs) / len(pairs), "trajectories": len(rollouts),
            "trajectory_acc": sum(all(right[i] for i in v) for v in rollouts.values()) / len(rollouts)}


def test_data_with_two_jobs_is_the_data_of_one(tmp_path, smollm2_wheel):
    """`train data --jobs 2`: two worker processes, merged in query order, give the same
    data as one process (each query has its own seed), up to float rounding."""
    from toolprm.train.data import DataConfig, build
    cfg = DataConfig(queries=3, rollouts=2, max_new_tokens=40, max_prompt_tokens=600,
                     mix={"live_simple": 0.5, "live_irrelevance": 0.5}, seed=5)
    one, two = tmp_path / "one", tmp_path / "two"
    m1 = build(one, cfg, progress=False)
    m2 = build(two, cfg, progress=False, jobs=2, threads=1)
    assert (two / "shard-0").is_dir() and (two / "shard-1").is_dir()
    assert (one / "queries.jsonl").read_text() == (two / "queries.jsonl").read_text()
    s1, s2 = ([json.loads(l) for l in (d / "steps.jsonl").read_text().splitlines()] for d in (one, two))
    assert len(s1) == len(s2) > 0
    for a, b in zip(s1, s2):  # another process may round the last digit of a log-prob differently
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
        assert {**a, "logprob": 0} == {**b, "logprob": 0}
    h1, h2 = (np.fromfile(d / "hidden.f32", dtype=np.float32) for d in (one, two))
    assert h1.shape == h2.shape and np.allclose(h1, h2, rtol=1e-3, atol=1e-3)
    assert m1["label_balance"] == m2["label_balance"] and m1["n_queries"] == m2["n_queries"] == 3
    assert len(m2["query_seconds"]) == 3


def _scorer_matches_training_features(data, ckpt, scorer):
    """The search's scorer, given a rollout's steps as a Candidate, gives every prefix
    the score `train eval` computes from the stored data (same features, same product)."""
    from toolprm.engine.query import Query
    from toolprm.engine.search import Candidate
    from toolprm.grammar import normalize_tools
    from toolprm.reward.features import events_from_records
    from toolprm.reward.prm import load as load_checkpoint
    from toolprm.train.data import load as load_data, load_queries
    from toolprm.train.labels import chain
    from toolprm.train.features import features

    records, hidden, _ = load_data(data)
    want = chain(records, load_checkpoint(ckpt).predict(features(records, hidden, data)))
    queries = load_queries(data)
    key = (records[0]["query"], records[0]["rollout"])
    idx = sorted((i for i, r in enumerate(records) if (r["query"], r["rollout"]) == key),
                 key=lambda i: records[i]["step"])
    q = queries[key[0]]
    ctx = Query(q["messages"], [t.spec() for t in normalize_tools(q["tools"])], [])
    events = tuple(events_from_records([records[i] for i in idx]))
    for n in range(1, len(idx) + 1):
        rows = idx[:n]
        cand = Candidate(records[rows[-1]]["partial"], events[:n], records[rows[-1]]["logprob"],
                         records[rows[-1]]["sampled"], 0.0, torch.from_numpy(hidden[rows[-1]]), False,
                         tuple(torch.from_numpy(hidden[i]) for i in rows),
                         tuple((records[i]["logprob"], records[i]["sampled"]) for i in rows))
        assert scorer.score(ctx, [cand])[0] == pytest.approx(want[rows[-1]], rel=1e-5, abs=1e-7)


def test_train_with_a_separate_backbone(tmp_path, bpe_tokenizer):
    """`train prm --backbone PATH`: hidden states recomputed with any causal LM; the
    checkpoint then loads as a BackbonePRM over that model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from toolprm.bfcl import ground_truth_calls
    from toolprm.reward import BackbonePRM, load_prm
    from toolprm.train.prm import TrainConfig, train

    cfg = LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=8, intermediate_size=16,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data"
    data.mkdir()
    steps, queries = [], []
    for i, c in enumerate(load_cases("live_simple", 6)):
        split = "val" if i % 3 == 2 else "train"
        queries.append({"key": c.id, "id": c.id, "category": c.category, "masked": False, "split": split,
                        "messages": c.messages, "tools": c.tools, "ground_truth": c.ground_truth})
        gt = ground_truth_calls(c)
        text = json.dumps(gt)
        evs = events_of(gt)
        for j, (ev, y) in enumerate(zip(evs, step_labels(c, evs))):
            steps.append({"query": c.id, "query_id": c.id, "category": c.category, "split": split,
                          "rollout": 0, "step": j, "kind": ev.kind, "call": ev.call, "key": ev.key,
                          "text": json.dumps(ev.value),
                          "partial": text[: 10 + 5 * j], "label": int(y and j <= i % 3), "sampled": 1,
                          "logprob": -0.5})
    (data / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (data / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (data / "meta.json").write_text(json.dumps({"hidden_size": 3, "complete": True}))
    np.zeros((len(steps), 3), np.float32).tofile(data / "hidden.f32")
    ckpt = tmp_path / "ckpt"
    prm = train(data, ckpt, TrainConfig(epochs=2, hidden=8, backbone=str(model_dir)), progress=False)
    man = json.loads((ckpt / "manifest.json").read_text())
    assert man["backbone"] == {"kind": "separate", "name": str(model_dir), "hidden_size": 8}
    assert man["metrics"]["steps"]["all"]["n"] > 0
    scorer = load_prm(ckpt)
    assert isinstance(scorer, BackbonePRM)


def test_sibling_sets_are_the_candidates_of_one_parent():
    """Each recorded set holds what fine_beam compares at a step: candidates from the
    search's own generator, every one extending the same parent by one step; with
    the ground truth's labels the sets hold right and wrong siblings (a live case)."""
    from toolprm.engine import get_policy, prepare
    from toolprm.train.rollout import sibling_sets

    case = next(c for c in load_cases("live_parallel") if c.id == "live_parallel_4-1-0")
    policy = get_policy()
    q = prepare(policy.tokenizer, case.messages, case.tools)
    sets, text = sibling_sets(policy, q, m=2, follow="policy", max_new_tokens=160)
    assert len(sets) >= 3 and json.loads(text)
    mixed = 0
    for s in sets:
        texts = [c.text for c in s.candidates]
        assert len(set(texts)) == len(texts) >= 2
        # each extends the parent, or ends the list (a repeated call is dropped)
        assert all(t.startswith(s.parent) and len(t) > len(s.parent) or c.final
                   for t, c in zip(texts, s.candidates))
        labels = [step_labels(case, c.events)[-1] for c in s.candidates]
        mixed += 0 < sum(labels) < len(labels)
    assert mixed >= 2
    # the first set offers [] and the tool names, as the search does
    assert '[]' in [c.text for c in sets[0].candidates]
    with pytest.raises(ToolprmError, match="follow"):
        sibling_sets(policy, q, follow="best")


def test_sibling_rank_metrics_on_hand_made_sets():
    from toolprm.train.siblings import rank_metrics

    def c(kind, label, prm, pol):
        return {"text": "", "kind": kind, "label": label, "scores": {"prm": prm, "policy": pol}}

    records = [
        {"candidates": [c("name", 1, 0.9, 0.2), c("name", 0, 0.1, 0.8), c("name", 0, 0.9, 0.1)]},
        {"candidates": [c("end", 0, 0.3, 0.6), c("name", 1, 0.7, 0.4)]},
        {"candidates": [c("key", 1, 0.5, 0.5), c("key", 1, 0.4, 0.4)]},   # no wrong one: not counted
        {"candidates": [c("key", 0, 0.5, 0.5), c("key", 0, 0.4, 0.4)]},   # no right one: not counted
    ]
    prm, pol = rank_metrics(records, "prm"), rank_metrics(records, "policy")
    assert prm["all"]["sets"] == 2 and prm["all"]["pairs"] == 3
    assert prm["all"]["top1"] == 1.0 and pol["all"]["top1"] == 0.0   # prm's tie: the first listed
    assert prm["all"]["pairwise"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert pol["all"]["pairwise"] == pytest.approx(1 / 3)
    assert prm["end+name"]["sets"] == 1 and prm["name"]["pairs"] == 2


def test_train_siblings_on_held_out_live_queries(tmp_path):
    """The command end to end on two held-out live queries: sets scored by the
    shipped PRM and the policy, grouped by parent, none from the PRM's own data."""
    from toolprm.train import siblings
    from toolprm.train.data import DataConfig, pick_cases

    cases = siblings.held_out_cases(2)
    assert not {c.id for c in cases} & {c.id for c in pick_cases(DataConfig())}
    out = tmp_path / "sib"
    assert siblings.main(["--queries", "2", "-m", "2", "--follow", "policy", "--max-new-tokens", "96",
                          "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(x) for x in (out / siblings.SETS).read_text().splitlines()]
    sets = [r for r in records if r["candidates"]]
    assert sets and {r["query"] for r in records} <= {c.id for c in cases}
    for r in sets:
        texts = [x["text"] for x in r["candidates"]]
        assert len(set(texts)) == len(texts) >= 2
        # each extends the parent, or ends the list (a repeated call is dropped)
        assert all(t.startswith(r["parent"]) and len(t) > len(r["parent"]) or json.loads(t) is not None
                   for t in texts)
        assert all(set(x["scores"]) == {"prm", "policy"} for x in r["candidates"])
    metrics = json.loads((out / siblings.METRICS).read_text())
    assert metrics["sets"] == len(sets) and (out / siblings.TABLE).read_text().startswith("Sibling ranking")
    # resume: nothing left to do, the same sets
    assert siblings.main(["--queries", "2", "-m", "2", "--follow", "policy", "--max-new-tokens", "96",
                          "--out", str(out), "--no-progress", "--resume"]) == 0
    assert [json.loads(x) for x in (out / siblings.SETS).read_text().splitlines()] == records


def test_auc_and_balanced_accuracy_on_hand_computed_examples():
    """The README's PRM metrics: AUC is the share of (right, wrong) pairs ranked
    right, ties counting half; balanced accuracy is the mean of the per-class
    recalls; both None when a class is absent."""
    from toolprm.train.evaluate import auc, balanced_accuracy
    y = np.array([1, 1, 0, 0, 0])
    # pairs (pos, neg): 0.9>0.1, 0.9>0.4, 0.9>0.4 ; 0.4>0.1, 0.4=0.4 (half), 0.4=0.4 (half) -> 5/6
    assert auc(y, np.array([0.9, 0.4, 0.1, 0.4, 0.4])) == pytest.approx(5 / 6)
    assert auc(y, np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == 0.0
    assert auc(y, np.full(5, 0.7)) == 0.5
    assert auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    # recall on positives 1/2, on negatives 3/3 -> 0.75 (plain accuracy would be 0.8)
    assert balanced_accuracy(y, np.array([1, 0, 0, 0, 0])) == pytest.approx(0.75)
    assert balanced_accuracy(np.array([0, 0, 0]), np.array([0, 1, 0])) == pytest.approx(2 / 3)
    assert balanced_accuracy(np.array([], dtype=bool), np.array([], dtype=bool)) is None


def test_masking_keeps_the_words_of_a_value_the_answer_copies():
    """live_simple_54-25-0: "Remove the 'todo random' item from my todo list", with a
    tool named todo and the answer's content "todo random". The value keeps its
    words (the answer still matches the query); the name elsewhere is renamed."""
    c = case_by_id("live_simple", "live_simple_54-25-0")
    m, mapping = mask_case(c, random.Random(0))
    new = mapping["functions"]["todo"]
    assert m.messages[-1]["content"].endswith(f"Remove the 'todo random' item from my {new} list")
    (args,) = m.ground_truth[0].values()
    assert ["todo random"] in args.values()
    assert check(m, ground_truth_calls(m)).correct
