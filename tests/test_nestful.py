"""NESTFUL and ComplexFuncBench (nestful-wrapper) as held-out BFCL-form cases: which
samples fit one call list, the conversion of their tools and answers, BFCL's checker
on them, and the guard that keeps them (and every other evaluation source) out of
training."""
from __future__ import annotations

import pytest

from toolprm.bfcl import check, ground_truth_calls, load_cases
from toolprm.bfcl.nestful import counts, to_tool, why_not_single_turn
from toolprm.errors import ToolprmError
from toolprm.grammar import normalize_tools


def test_which_samples_fit_a_single_turn_call_list():
    call = {"name": "f", "arguments": {"city": "Paris"}, "label": "var1", "response": {"lat": 48.85}}
    end = {"name": "var_result", "arguments": {"x": "$var1$"}}
    assert why_not_single_turn({"input": "Weather in Paris", "output": [call, end]}) is None
    ref = {"name": "g", "arguments": {"lat": "$var1.lat$"}}
    assert why_not_single_turn({"input": "Weather in Paris", "output": [call, ref]}) == "reference"
    # a value copied from an earlier response (ComplexFuncBench writes them out)
    copied = {"name": "g", "arguments": {"lat": 48.85}}
    assert why_not_single_turn({"input": "Weather in Paris", "output": [call, copied]}) == "response"
    # ... unless the query itself holds it
    assert why_not_single_turn({"input": "Weather at 48.85", "output": [call, copied]}) is None
    assert why_not_single_turn({"input": "hi", "output": [end]}) == "no call"


def test_tool_conversion_to_bfcl_dialect():
    t = to_tool({"name": "Buses.FindBus", "description": "Find a bus", "query_parameters": {
        "origin": {"description": "city", "required": True, "allowed_values": []},
        "fare": {"description": "fare", "required": False, "allowed_values": ["Economy", "Flexible"]},
        "n": {"type": "number", "required": False}, "opts": {"type": "object", "required": False}}})
    p = t["parameters"]
    assert p["type"] == "dict" and p["required"] == ["origin"]
    assert p["properties"]["origin"] == {"type": "string", "description": "city"}
    assert p["properties"]["fare"]["enum"] == ["Economy", "Flexible"]
    assert p["properties"]["n"]["type"] == "float" and p["properties"]["opts"]["type"] == "dict"
    normalize_tools([t])   # the grammar takes it


def test_real_samples_their_counts_and_the_checker_on_them():
    c = counts()
    assert set(c) == {"executable", "glaive", "sgd", "complexfuncbench"}
    for tally in c.values():
        assert tally["samples"] == sum(v for k, v in tally.items() if k != "samples")
    # every ComplexFuncBench sample reads an earlier response: none fits one turn
    assert c["complexfuncbench"]["fits"] == 0 and c["complexfuncbench"]["samples"] == 1000
    cases = load_cases("nestful")
    assert len(cases) == sum(t["fits"] for t in c.values()) > 0
    assert load_cases("nestful", limit=2) == [cases[0], cases[len(cases) // 2]]
    for case in cases:
        gold = ground_truth_calls(case)
        assert {g["name"] for g in gold} <= {t["name"] for t in case.tools} and len(case.tools) > len(
            {g["name"] for g in gold})   # distractors beside the answer's tools
        normalize_tools(case.tools)
        assert check(case, gold).correct
        assert check(case, gold[::-1]).correct            # a call list in any order
        assert not check(case, gold[:-1]).correct         # a call missing
        assert not check(case, gold + gold[:1]).correct   # one too many
        assert not check(case, []).correct
    # an optional parameter the gold call leaves out must be left out
    case = next(k for k in cases if any(
        set(t["parameters"]["properties"]) - set(t["parameters"]["required"]) - set(g["arguments"])
        for g in ground_truth_calls(k) for t in k.tools if t["name"] == g["name"]))
    gold = ground_truth_calls(case)
    for g in gold:
        tool = next(t for t in case.tools if t["name"] == g["name"])
        extra = sorted(set(tool["parameters"]["properties"]) - set(tool["parameters"]["required"]) - set(g["arguments"]))
        if extra:
            g["arguments"][extra[0]] = "x" if tool["parameters"]["properties"][extra[0]]["type"] == "string" else 1
            break
    assert not check(case, gold).correct


def test_nestful_sets_are_evaluation_data_and_training_refuses_them(tmp_path):
    from toolprm.train import gold_sets
    from toolprm.train.encoder import load_sets
    data = tmp_path / "nestful"
    meta = gold_sets.build(data, masked=1, limit=1, held="nestful", progress=False)
    assert meta["sets"] >= 2 and meta["held_out"] == "nestful"
    with pytest.raises(ToolprmError, match="evaluation data"):
        load_sets(data)
    # the live held-out sets are refused the same way
    held = tmp_path / "held"
    gold_sets.build(held, masked=0, limit=1, held=True, progress=False)
    with pytest.raises(ToolprmError, match="evaluation data"):
        load_sets(held)
    with pytest.raises(ToolprmError, match="pick one"):
        gold_sets.main(["--nestful", "--held-out", "--out", str(tmp_path / "x")])
