"""PRM v2: sibling sets along right answers, the text rendering, the cross-encoder
reader (a real train on a small slice, its checkpoint checks) and the reader metrics."""
from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace as E

import pytest
import torch

from toolprm.bfcl import ground_truth_calls, held_out, load_cases
from toolprm.engine import get_policy
from toolprm.errors import ToolprmError
from toolprm.grammar import compile, normalize_tools
from toolprm.reward.render import render
from toolprm.train import gold_sets
from toolprm.train.encoder import EncoderConfig, loss_of
from toolprm.train.labels import step_labels


def sets_of(case):
    g = compile(normalize_tools(case.tools), get_policy().tokenizer, calls="any")
    return gold_sets.walk(case, g, random.Random(0))


@pytest.mark.parametrize("category", ["live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"])
def test_gold_sets_are_siblings_of_one_parent_with_the_right_one_among_them(category):
    case = next(c for c in load_cases(category) if not held_out(c.id)
                and c.id not in gold_sets.KNOWN_UNSATISFIABLE)
    sets = sets_of(case)
    assert len(sets) >= 2
    kinds = set()
    for s in sets:
        texts = [c["text"] for c in s["candidates"]]
        assert len(set(texts)) == len(texts) >= 2
        assert all(t.startswith(s["parent"]) and len(t) > len(s["parent"]) for t in texts)
        # the walk follows a right answer, so each set holds a right candidate, and every
        # candidate's events extend the parent's by its own step
        assert any(c["label"] for c in s["candidates"])
        # the stored label is BFCL's checker's on the stored events
        for c in s["candidates"]:
            events = [E(kind=k, call=i, key=key, value=v) for k, i, key, v in c["events"]]
            assert c["label"] == step_labels(case, events)[-1]
        kinds |= {c["kind"] for c in s["candidates"]}
    assert {"name", "end"} <= kinds   # another tool, and closing the list, are offered
    assert sum(0 < sum(c["label"] for c in s["candidates"]) < len(s["candidates"]) for s in sets) >= 1


def test_irrelevance_gold_set_rights_the_empty_list_only():
    case = next(c for c in load_cases("live_irrelevance") if not held_out(c.id))
    (first,) = sets_of(case)
    by_text = {c["text"]: c["label"] for c in first["candidates"]}
    assert by_text.pop("[]") == 1 and by_text and not any(by_text.values())


def test_hard_negatives_are_offered_and_labelled_by_the_checker():
    # a number off by one, or in another unit, is offered and wrong
    case = next(c for c in load_cases("live_simple") if not held_out(c.id) and any(
        type(v) is int for call in ground_truth_calls(c) for v in call["arguments"].values()))
    for s in sets_of(case):
        values = [c for c in s["candidates"] if c["kind"] == "value"]
        right = [c for c in values if c["label"]]
        if right and isinstance(right[0]["events"][-1][3], int):
            v = right[0]["events"][-1][3]
            wrong = {c["events"][-1][3] for c in values if not c["label"]}
            assert {v + 1, v - 1} & wrong
    # and, whatever the case, a value set holds a wrong value beside the right one
    cases = [c for c in load_cases("live_simple")[:40] if not held_out(c.id)]
    mixed = [s for c in cases for s in sets_of(c)
             if any(x["kind"] == "value" for x in s["candidates"])
             and 0 < sum(x["label"] for x in s["candidates"]) < len(s["candidates"])]
    assert len(mixed) >= 10


def test_masked_variant_is_consistent_across_tools_query_and_answer():
    case = next(c for c in load_cases("live_multiple") if not held_out(c.id)
                and c.id not in gold_sets.KNOWN_UNSATISFIABLE)
    (vid0, orig), (vid1, masked), (vid2, masked2) = gold_sets.variants(case, 2, seed=0)
    assert vid0 == case.id and vid1 == f"{case.id}#mask0" and vid2 == f"{case.id}#mask1"
    names = {t["name"] for t in masked.tools}
    assert not names & {t["name"] for t in orig.tools}
    for answer in masked.ground_truth:
        (fn, args), = answer.items()
        assert fn in names
        tool = next(t for t in masked.tools if t["name"] == fn)
        assert set(args) <= set(tool["parameters"]["properties"])
    # the right answer of the masked copy walks and labels right, as the original's does
    for c in (orig, masked):
        sets = sets_of(c)
        assert sets and all(any(x["label"] for x in s["candidates"]) for s in sets)
    assert gold_sets.variants(case, 2, seed=0)[1][1].tools == masked.tools   # seeded


def test_every_data_source_refuses_the_test_categories(monkeypatch):
    monkeypatch.setattr(gold_sets, "CATEGORIES", ("live_simple", "simple_python"))
    with pytest.raises(ToolprmError, match="test"):
        gold_sets.usable_cases()
    # held-out queries never reach the training data
    monkeypatch.setattr(gold_sets, "CATEGORIES", ("live_simple",))
    assert not any(held_out(c.id) for c in gold_sets.usable_cases())
    assert all(held_out(c.id) for c in gold_sets.usable_cases(held=True))


def test_listwise_and_pointwise_losses_on_a_hand_made_example():
    groups = [[{"label": 1}, {"label": 0}, {"label": 0}], [{"label": 0}, {"label": 1}], [{"label": 1}]]
    z = torch.tensor([2.0, 0.0, 1.0, 0.0, 3.0, 5.0])
    listwise = loss_of(z, groups, EncoderConfig(listwise=1.0, pointwise=0.0))
    # softmax mass of the right one per set with a right and a wrong one; the last set has no wrong one
    want = (-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(1))) - math.log(math.exp(3) / (1 + math.exp(3)))) / 2
    assert listwise.item() == pytest.approx(want, rel=1e-6)
    pointwise = loss_of(z, groups, EncoderConfig(listwise=0.0, pointwise=1.0))
    y = torch.tensor([1.0, 0, 0, 0, 1, 1])
    assert pointwise.item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(z, y).item())
    both = loss_of(z, groups, EncoderConfig(listwise=1.0, pointwise=0.5))
    assert both.item() == pytest.approx(listwise.item() + 0.5 * pointwise.item(), rel=1e-6)
    # two right siblings share the mass: ranking either first costs nothing more
    two = loss_of(torch.tensor([1.0, 1.0, -9.0]), [[{"label": 1}, {"label": 1}, {"label": 0}]],
                  EncoderConfig(pointwise=0.0))
    assert two.item() < 1e-3


def test_render_reads_descriptions_calls_so_far_and_the_tool_list():
    tools = [{"name": "get_weather", "description": "Weather for a city.\nMore.",
              "parameters": {"type": "object", "properties": {
                  "city": {"type": "string", "description": "City name"},
                  "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}},
             {"name": "get_time", "description": "Time now.", "parameters": {"type": "object", "properties": {}}}]
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Weather in Paris?"}]
    name = ["name", 0, None, "get_weather"]
    key = ["key", 0, "city", "city"]
    value = ["value", 0, "city", "Paris"]
    q, step = render(msgs, tools, [name])
    assert q == "Weather in Paris?" and "Weather for a city." in step and "calls before: none" in step
    _, step = render(msgs, tools, [name, key])
    assert "parameter city (string, required): City name" in step and step.startswith("set city")
    _, step = render(msgs, tools, [name, key, value])
    assert step.startswith('city = "Paris"')
    _, step = render(msgs, tools, [name, ["key", 0, "unit", "unit"], ["value", 0, "unit", "c"], key])
    assert 'calls: get_weather(unit="c")' in step
    _, step = render(msgs, tools, [name, ["key", 0, "unit", "unit"]])
    assert 'parameter unit (string one of ["c", "f"], optional)' in step
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    _, step = render(msgs, tools, [name, key, value, ["end", 1, None, calls]])
    assert step.startswith("answer: stop after 1 call(s)") and "get_time: Time now." in step
    assert "More." not in step     # one-line descriptions in the tool list
    _, step = render(msgs, tools, [["end", 0, None, []]])
    assert step.startswith("answer: no call") and "get_weather: Weather for a city." in step


def test_reader_metrics_on_hand_made_sets():
    from toolprm.train.readers import ece, metrics

    def c(text, kind, label, s):
        return {"text": text, "kind": kind, "label": label, "scores": {"r": s}}

    sets = [
        {"category": "live_irrelevance", "parent": "", "candidates": [c("[]", "end", 1, 0.9), c("[{", "name", 0, 0.2)]},
        {"category": "live_simple", "parent": "", "candidates": [c("[]", "end", 0, 0.3), c("[{", "name", 1, 0.8)]},
        {"category": "live_simple", "parent": "[{", "candidates": [c("[{}]", "end", 1, 0.4), c("[{},", "name", 0, 0.6)]},
    ]
    m = metrics(sets, "r")
    assert m["sets"] == 3 and m["top1"] == pytest.approx(2 / 3) and m["pairs"] == 3
    assert m["empty_auc"] == 1.0 and m["empty_n"] == [1, 1]
    # the one end step after a call: right, scored 0.4 -> called wrong; no wrong end step
    assert m["end_n"] == [1, 0] and m["end_balanced_accuracy"] == 0.0
    assert ece([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert ece([], []) is None


def test_quick_encoder_train_scores_and_checkpoint_checks(tmp_path):
    """A real (tiny) run: sets from a few live queries, three optimizer steps, a
    checkpoint of only the fine-tuned layers that loads, scores the search's
    candidates, and refuses a checkpoint of another format, base or shape."""
    from toolprm.engine.query import prepare
    from toolprm.reward import encoder as enc
    from toolprm.train import encoder as train_enc

    data = tmp_path / "sets"
    meta = gold_sets.build(data, masked=1, limit=3, progress=False)
    assert meta["sets"] >= 3 and meta["candidates"] > meta["sets"]
    again = gold_sets.build(data, masked=1, limit=3, progress=False)   # resumes: nothing new
    assert again["sets"] == meta["sets"]
    # policy walks of one training-side query, to train on beside the gold sets
    from toolprm.train import siblings
    walks = tmp_path / "walks"
    assert siblings.main(["--train-side", "--queries", "1", "-m", "2", "--follow", "policy", "--max-new-tokens",
                          "96", "--out", str(walks), "--no-progress"]) == 0
    assert not any(held_out(json.loads(x)["query"]) for x in (walks / siblings.SETS).read_text().splitlines())
    ckpt = tmp_path / "ckpt"
    assert train_enc.main(["--data", str(data), "--out", str(ckpt), "--steps", "3", "--batch", "8",
                           "--max-length", "96", "--val-share", "0.5", "--walks", str(walks),
                           "--no-progress"]) == 0
    manifest = json.loads((ckpt / enc.MANIFEST).read_text())
    assert manifest["format"] == enc.FORMAT and manifest["base"]["sha256"] == enc.BASE_SHA256
    assert manifest["config"]["steps"] == 3 and manifest["command"].startswith("toolprm train encoder")
    assert manifest["walks"] == [str(walks)] and manifest["data_counts"]["walk_sets"] >= 1
    # held-out walks are refused as training data
    held = tmp_path / "held"
    held.mkdir()
    case = siblings.held_out_cases(1)[0]
    (held / siblings.SETS).write_text(json.dumps({"query": case.id, "category": case.category, "parent": "",
                                                  "candidates": [{"text": "[]", "kind": "end", "label": 0, "scores": {},
                                                                  "events": [["end", 0, None, []]]}]}) + "\n")
    with pytest.raises(ToolprmError, match="held-out"):
        train_enc.main(["--data", str(data), "--out", str(tmp_path / "x"), "--steps", "1", "--walks", str(held)])
    assert (ckpt / enc.WEIGHTS).stat().st_size < 20e6
    scorer = enc.EncoderScorer(ckpt)
    case = load_cases("live_simple")[0]
    q = prepare(get_policy().tokenizer, case.messages, case.tools)
    g = compile(q.normalized, get_policy().tokenizer, calls="any")
    first = g.start().advance_bytes(b'[{"name": "' + q.tools[0]["name"].encode() + b'"')
    states = [g.start().advance_bytes(b"[]"), first,
              first.advance_bytes(b', "arguments": {"' + next(iter(q.tools[0]["parameters"]["properties"])).encode() + b'"')]
    cands = [E(text=st.text, events=st.events) for st in states]
    scores = scorer.score(q, cands)
    assert len(scores) == 3 and all(0 < x < 1 for x in scores) and scores[0] != scores[1]
    # a candidate's score chains its steps: the key's score is its own times its call's
    step = torch.sigmoid(enc.logits(scorer.model, scorer.tok, [render(q.messages, q.tools, states[2].events)],
                                    max_length=scorer.max_length, bf16=scorer.bf16))[0].item()
    assert scores[2] == pytest.approx(scores[1] * step, rel=1e-2)   # bf16: batch shapes differ
    # the comparison command on the same sets (here the training slice itself)
    from toolprm.train import readers
    assert readers.main(["--gold", str(data), "--encoder", f"tiny={ckpt}", "--out", str(tmp_path / "r"),
                         "--report", str(tmp_path / "r.md")]) == 0
    r = json.loads((tmp_path / "r" / "metrics.json").read_text())
    m = r["sources"]["gold walks"]["readers"]["tiny"]
    assert m["sets"] >= 1 and 0 <= m["pairwise"] <= 1 and r["seconds_per_candidate"]["tiny"] > 0
    assert (tmp_path / "r.md").read_text().startswith("**gold walks**")
    with pytest.raises(ToolprmError, match="NAME=PATH"):
        readers.main(["--gold", str(data), "--encoder", str(ckpt)])
    # policy walks carry the head's and the policy's scores, and the hybrid made of them
    for st in readers.walk_sets(walks):
        for cand in st["candidates"]:
            sc = cand["scores"]
            assert sc["hybrid"] == (sc["policy"] if cand["kind"] == "value" else sc["prm"])
    assert readers.main(["--walks", str(walks), "--no-encoder", "--out", str(tmp_path / "rw")]) == 0
    rw = json.loads((tmp_path / "rw" / "metrics.json").read_text())
    assert set(rw["sources"]["policy walks"]["readers"]) == {"hybrid", "policy", "prm"}
    with pytest.raises(ToolprmError, match="contradict"):
        readers.main(["--walks", str(walks), "--no-encoder", "--encoder", f"tiny={ckpt}"])
    # an evenly spread few sets, the same for every reader; a NESTFUL folder is its own source
    assert readers.main(["--gold", str(data), "--nestful", str(data), "--max-sets", "2", "--encoder",
                         f"tiny={ckpt}", "--out", str(tmp_path / "r2")]) == 0
    r2 = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert set(r2["sources"]) == {"gold walks", "NESTFUL gold walks"}
    assert all(s["set_count"] == 2 for s in r2["sources"].values())
    # refusals
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / enc.WEIGHTS).write_bytes((ckpt / enc.WEIGHTS).read_bytes())
    for change, match in (({"format": "other/1"}, "format"),
                          ({"base": {"sha256": "0" * 64}}, "another base"),
                          ({"trained_layers": 3}, "do not match")):
        (bad / enc.MANIFEST).write_text(json.dumps({**manifest, **change}))
        with pytest.raises(ToolprmError, match=match):
            enc.load(bad)
    with pytest.raises(ToolprmError, match="not a reader checkpoint"):
        enc.load(tmp_path)


def test_generative_reader_prompt_train_scores_and_checkpoint_checks(tmp_path):
    """Reader (c): SmolLM2 with LoRA adapters saying " +" or " -". The prompt keeps its
    question under truncation; a real two-step train through the shared loop saves
    only the adapters, which load back to the same scores, serve as the search's
    scorer, and are refused for another base or another adapter shape."""
    from toolprm.engine.query import prepare
    from toolprm.reward import encoder as enc
    from toolprm.reward import generative as gen
    from toolprm.train import encoder as train_enc

    tok = get_policy().tokenizer
    long_query = "weather " * 300
    ids = gen.encode(tok, [(long_query, "call get_weather"), ("hi", "answer: no call")], 64)
    tail = tok.encode(gen.QUESTION, add_special_tokens=False)
    assert ids["input_ids"].shape[1] <= 64
    for row, mask in zip(ids["input_ids"].tolist(), ids["attention_mask"].tolist()):
        assert row[-len(tail):] == tail                   # the question the answer follows is never cut
    assert "call get_weather" in tok.decode(ids["input_ids"][0])   # nor is the step, by a long query
    assert ids["attention_mask"][1].tolist()[0] == 0      # left-padded

    data = tmp_path / "sets"
    gold_sets.build(data, masked=0, limit=2, progress=False)
    ckpt = tmp_path / "gen"
    assert train_enc.main(["--data", str(data), "--out", str(ckpt), "--steps", "2", "--batch", "4",
                           "--max-per-set", "2", "--max-length", "64", "--lora-rank", "2", "--lora-layers", "2",
                           "--val-share", "0", "--no-progress"], reader="generative") == 0
    manifest = json.loads((ckpt / gen.MANIFEST).read_text())
    assert manifest["format"] == gen.FORMAT and manifest["lora"] == {"rank": 2, "layers": 2,
                                                                    "targets": list(gen.TARGETS)}
    assert manifest["command"].startswith("toolprm train generative")
    assert (ckpt / gen.WEIGHTS).stat().st_size < 1e6      # adapters only, not the base
    model, tok2, _ = enc.load(ckpt)                        # the one loader dispatches on the format
    assert isinstance(model, gen.GenerativeReader)
    case = load_cases("live_simple")[0]
    q = prepare(tok, case.messages, case.tools)
    g = compile(q.normalized, tok, calls="any")
    states = [g.start().advance_bytes(b"[]"),
              g.start().advance_bytes(b'[{"name": "' + q.tools[0]["name"].encode() + b'"')]
    scores = enc.EncoderScorer(ckpt, bf16=False).score(q, [E(text=st.text, events=st.events) for st in states])
    assert all(0 < x < 1 for x in scores) and scores[0] != scores[1]
    # the trained adapters moved the score: the base with fresh (zero-effect) adapters scores otherwise
    pairs = [render(q.messages, q.tools, st.events) for st in states]
    fresh, _ = gen.new_model(2, 2)
    assert not torch.allclose(enc.logits(model, tok2, pairs, max_length=64),
                              enc.logits(fresh, tok2, pairs, max_length=64))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / gen.WEIGHTS).write_bytes((ckpt / gen.WEIGHTS).read_bytes())
    for change, match in (({"base": {"sha256": "0" * 64}}, "another base"),
                          ({"lora": {**manifest["lora"], "layers": 3}}, "do not match")):
        (bad / gen.MANIFEST).write_text(json.dumps({**manifest, **change}))
        with pytest.raises(ToolprmError, match=match):
            enc.load(bad)


def test_generate_with_the_shipped_cross_encoder():
    """fine_beam scored by the shipped cross-encoder: a valid call list, the reader's
    scores on its steps, and its time counted apart."""
    from toolprm.engine import generate
    tools = [{"name": "get_weather", "description": "Current weather for a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
             {"name": "get_time", "description": "The time in a time zone.",
              "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}]
    r = generate("What's the weather in Paris?", tools, strategy="fine_beam", m=2, n=1, scorer="minilm",
                 max_new_tokens=64)
    assert r.calls is not None and all(c["name"] in {"get_weather", "get_time"} for c in r.calls)
    assert r.stats["scorer_calls"] > 0 and r.stats["scorer_seconds"] > 0
    assert any(s["score"] is not None and 0 < s["score"] < 1 for s in r.steps)


def test_train_all_names_its_readers():
    from toolprm.train.cli import main
    with pytest.raises(ToolprmError, match="--reader must be one of head, minilm"):
        main(["all", "--reader", "bert"])
