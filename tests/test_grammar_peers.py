"""The grammar peers (XGrammar, llguidance, outlines-core) in `bench grammar --peers`,
and XGrammar/llguidance as constrained-greedy peers in `bench bfcl`.

Smoke tests on small inputs: every engine compiles a BFCL tool set, walks its answer
token by token with its own masks, and tells a valid instance from an invalid one;
the bench writes its JSON, table and README block. Nothing here asserts on time.
llguidance is in the dev extra and `make setup` installs xgrammar (without triton), so
under CI=true a missing one fails instead of skipping.
"""
from __future__ import annotations

import importlib
import json

import jsonschema
import pytest

from conftest import CI, missing_download
from toolprm import grammar as G
from toolprm.bench import grammar_bench
from toolprm.bench import grammar_peers as P
from toolprm.bfcl import ground_truth_calls, load_cases

PACKAGES = {"xgrammar": "xgrammar", "llguidance": "llguidance", "outlines-core": "outlines_core"}


def need(peer: str) -> None:
    try:
        importlib.import_module(PACKAGES[peer])
    except ImportError:
        msg = f"{peer} is not installed (pip install -e '.[bench]')"
        if CI:
            pytest.fail(f"{msg}; `make setup` installs it, so its tests must run, not skip", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def vocab(smollm2_tokenizer):
    return G.Vocabulary.from_tokenizer(smollm2_tokenizer)


@pytest.mark.parametrize("peer", P.PEERS)
def test_peer_compiles_and_walks_a_bfcl_answer(peer, smollm2_tokenizer, vocab):
    need(peer)
    engines = P.make_engines([peer], smollm2_tokenizer, vocab)
    assert list(engines) == ["ours", peer]
    case = load_cases("parallel_multiple", 1)[0]
    g = G.compile(case.tools, vocab)
    calls = P.schema_ordered(ground_truth_calls(case), g.schema)
    jsonschema.validate(calls, g.schema)
    tokens = smollm2_tokenizer.encode(json.dumps(calls), add_special_tokens=False)
    row = P.measure_tool_set(engines, P.Task(case.tools, g.schema), tokens, with_slow=True)
    for name in engines:
        r = row[name]
        assert "error" not in r and not r.get("walk_rejected"), r
        assert r["compile_s"] > 0 and len(r["cold"]) == len(r["warm"]) == len(tokens)
    # the same answer, cut short, is not a complete output for any engine
    for name, eng in engines.items():
        handle = eng.compile(P.Task(case.tools, g.schema))
        assert eng.accepts(handle, tokens)
        assert not eng.accepts(handle, tokens[:-1])
        assert eng.walk(handle, tokens[:-1]) is None


@pytest.mark.parametrize("peer", ["xgrammar", "llguidance"])
def test_peer_language_on_a_small_schema(peer, smollm2_tokenizer, vocab):
    """The suite's check: a valid instance accepted, an invalid one rejected, and a
    schema the engine refuses is Refused (not an exception of another kind)."""
    need(peer)
    eng = P.make_engines([peer], smollm2_tokenizer, vocab)[peer]
    h = eng.compile(P.Task(None, {"type": "object", "properties": {"a": {"type": "string", "maxLength": 2}},
                                  "required": ["a"]}))
    enc = lambda v: smollm2_tokenizer.encode(json.dumps(v), add_special_tokens=False)  # noqa: E731
    assert eng.accepts(h, enc({"a": "xy"}))
    assert not eng.accepts(h, enc({"a": "xyz"}))
    assert not eng.accepts(h, enc({"b": "x"}))
    assert eng.accepts(h, enc({"a": ""}))  # after two rejections: no state carried over


def test_suite_run_counts_unsound_and_incomplete(smollm2_tokenizer, vocab):
    """suite_run against hand-made groups: a verdict the engine gets wrong is counted on
    the right side (ours refuses uniqueItems, so only the first group compiles for it)."""
    groups = [("g/closed", {"schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                            "tests": [{"data": {"a": 1}, "valid": True, "description": "ok"},
                                      {"data": {"a": "x"}, "valid": False, "description": "bad type"},
                                      {"data": {"a": 1, "b": 2}, "valid": True, "description": "extra key"}]}),
              ("g/unique", {"schema": {"type": "array", "uniqueItems": True},
                            "tests": [{"data": [1, 1], "valid": False, "description": "dup"}]})]
    engines = P.make_engines([], smollm2_tokenizer, vocab)
    res = P.suite_run(engines, smollm2_tokenizer, groups, progress=False)["ours"]
    assert res["compiled"] == 1 and res["compiled_sound"] == 1 and res["instances"] == 3
    assert res["unsound"] == [] and res["incomplete"] == ["g/closed: extra key"]  # a documented limit


def test_suite_run_counts_a_peer_that_ignores_a_keyword(smollm2_tokenizer, vocab):
    """XGrammar 0.2.8 compiles `not` without enforcing it: the group counts as compiled,
    its integer instance as unsound, and the group not as compiled soundly."""
    need("xgrammar")
    groups = [("g/not", {"schema": {"not": {"type": "integer"}},
                         "tests": [{"data": 1, "valid": False, "description": "integer"},
                                   {"data": "a", "valid": True, "description": "string"}]})]
    engines = P.make_engines(["xgrammar"], smollm2_tokenizer, vocab)
    res = P.suite_run(engines, smollm2_tokenizer, groups, progress=False)
    assert res["ours"]["compiled"] == 0  # ours refuses not
    x = res["xgrammar"]
    assert x["compiled"] == 1 and x["compiled_sound"] == 0 and x["instances"] == 2
    assert x["unsound"] == ["g/not: integer"] and x["incomplete"] == []


def test_schema_ordered_follows_the_schema():
    schema = {"items": {"anyOf": [{"properties": {"name": {"const": "f"},
                                                  "arguments": {"properties": {"b": {}, "a": {}, "c": {}}}}}]}}
    calls = [{"name": "f", "arguments": {"a": 1, "z": 0, "b": 2}}]
    assert list(P.schema_ordered(calls, schema)[0]["arguments"]) == ["b", "a", "z"]


def _rows():
    # two tool sets; ours takes 2 and 6 ms to compile, the peer 1 and 60 ms; per token
    # ours 3,5 (cold) against the peer's 1,1; the second peer refuses the second tool set
    return [{"id": "a", "ours": {"compile_s": 0.002, "cached_s": 1e-4, "cold": [3e-6, 5e-6], "warm": [1e-6, 1e-6]},
             "xgrammar": {"compile_s": 0.001, "cached_s": 2e-4, "cold": [1e-6, 1e-6], "warm": [2e-6, 2e-6]},
             "llguidance": {"compile_s": 0.004, "cached_s": None, "cold": [2e-6, 2e-6], "warm": [2e-6, 2e-6]}},
            {"id": "b", "ours": {"compile_s": 0.006, "cached_s": 1e-4},
             "xgrammar": {"compile_s": 0.060, "cached_s": 2e-4},
             "llguidance": {"error": "refused"}}]


def test_summary_ratios_are_ours_over_peer_on_shared_tool_sets():
    s = P.summarize_bfcl(_rows(), ["ours", "xgrammar", "llguidance"])
    assert s["ours"]["compiled"] == 2 and s["llguidance"]["compiled"] == 1
    x = s["xgrammar"]["ratio"]
    assert x["compile"] == pytest.approx((2.0 + 0.1) / 2)  # median of 2 and 0.1
    assert x["cold"] == pytest.approx([4.0, 4.0]) and x["warm"] == pytest.approx([0.5, 0.5])
    assert x["cached"] == pytest.approx(0.5)
    lg = s["llguidance"]["ratio"]
    assert lg["tool_sets"] == 1 and lg["compile"] == pytest.approx(0.5) and lg["cached"] is None
    assert lg["cold"] == pytest.approx([2.0, 2.0])


def test_targets_say_met_and_missed():
    v = {"bfcl": P.summarize_bfcl(_rows(), ["ours", "xgrammar"]),
         "suite": {"ours": {"compiled": 5, "unsound": 0}, "xgrammar": {"compiled": 7, "unsound": 3}}}
    lines = "\n".join(P.targets(v))
    assert "cold: ours / XGrammar 4.00 (median), 4.00 (mean): **missed**, at worst 4.00x XGrammar's" in lines
    assert "warm: ours / XGrammar 0.50 (median), 0.50 (mean): met" in lines
    assert "1.050x (median over tool sets): **missed**" in lines
    assert "5 against 7 groups compiled: **missed**, 2 short" in lines
    assert "0 unsound: ours 0: met" in lines


def test_bench_grammar_peers_end_to_end(tmp_path, capsys):
    """`bench grammar --peers`: the JSON, the table with the targets, then the table again
    from that JSON into a README block."""
    need("xgrammar")
    need("llguidance")
    from schema_suite import SDIST
    import os
    if not os.path.exists(SDIST):
        missing_download("the jsonschema sdist", "run `make suite`")
    out = tmp_path / "peers.json"
    assert grammar_bench.main(["--peers", "xgrammar,llguidance", "--limit", "5", "--suite-limit", "6",
                               "--out", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    v = result["vocabularies"]["smollm2"]
    assert v["engines"] == ["ours", "xgrammar", "llguidance"] and v["vocab_size"] == 49152
    assert v["bfcl"]["ours"]["tool_sets"] == 5 and v["suite"]["ours"]["groups"] == 6
    assert v["bfcl"]["xgrammar"]["ratio"]["walks"] >= 1
    assert "| mask + advance per token, cold, median / mean |" in table and "Targets (issue 15)" in table
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- grammar-peers:start -->\nPLACEHOLDER\n<!-- grammar-peers:end -->\ntail\n")
    assert grammar_bench.main(["--from-json", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "PLACEHOLDER" not in text and text.endswith("<!-- grammar-peers:end -->\ntail\n")
    assert "Written by `toolprm bench grammar --peers xgrammar,llguidance --limit 5" in text
    assert capsys.readouterr().out.strip() in text


def test_unknown_peer_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown engine 'xgrammer'"):
        grammar_bench.main(["--peers", "xgrammer", "--limit", "1", "--no-suite"])


def test_bfcl_processor_peers_end_to_end(tmp_path, smollm2_wheel):
    """`bench bfcl --strategy xgrammar --strategy llguidance`: the same model, prompt and
    case as the engine; each peer's output is a call list valid under the schema."""
    need("xgrammar")
    need("llguidance")
    import torch

    from toolprm.bench import harness, report
    from toolprm.grammar import DEFAULT_MAX_CALLS, call_list_schema, normalize_tools

    threads = torch.get_num_threads()
    out = tmp_path / "run"
    argv = ["--category", "simple_python", "--limit", "1", "--strategy", "xgrammar", "--strategy", "llguidance",
            "--max-new-tokens", "64", "--threads", "1", "--out", str(out), "--quiet", "--no-plots"]
    try:
        assert harness.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    records = report.load_records(out)
    assert [r["strategy"] for r in records] == ["xgrammar", "llguidance"]
    case = load_cases("simple_python", 1)[0]
    schema = call_list_schema(normalize_tools(case.tools), "any", DEFAULT_MAX_CALLS)
    for r in records:
        assert r["exception"] is None and r["id"] == case.id
        assert r["generated_tokens"] > 0 and r["forward_passes"] == r["generated_tokens"] + 1
        assert r["valid"] and r["calls"] == json.loads(r["text"])
        jsonschema.validate(r["calls"], schema)


def test_scaling_takes_the_processor_peers_only_when_named():
    from toolprm.bench import harness, scaling
    from toolprm.errors import ToolprmError

    assert {"xgrammar", "llguidance"} <= set(harness.STRATEGY_CHOICES)
    labels = [s.label for s in scaling.specs_for(8, 2, [2], [1], scaling.baselines_arg("llguidance,greedy,xgrammar"))]
    assert labels[:3] == ["greedy", "xgrammar", "llguidance"]
    default = [s.label for s in scaling.specs_for(8, 2, [2], [1])]
    assert "xgrammar" not in default and "llguidance" not in default
    with pytest.raises(ToolprmError, match="unknown baseline 'xgramar'.*xgrammar, llguidance"):
        scaling.baselines_arg("xgramar")
