"""bench ceiling: greedy, a scorer's search and the oracle ceiling on the same cases,
split into what the candidates miss and what is left for the scorer. The runs are
made by the real harness and BFCL's checker, with scripted outputs."""
from __future__ import annotations

import json

import pytest
from test_harness import FakeResult

from toolprm.bench import bounds, ceiling
from toolprm.bench.harness import RunConfig, StrategySpec, run_bench
from toolprm.bfcl import ground_truth_calls, load_cases
from toolprm.errors import ToolprmError

LABEL = "fine_beam(m=4,n=2)"


def _run(path, scorer: str, right: dict[str, set[int]], cases, seconds: dict[str, float]):
    """A harness run where strategy s is right on the case indices ``right[s]``
    (greedy runs only where ``right`` names it)."""
    index = {c.id: i for i, c in enumerate(cases)}

    def runner(case, spec, mode):
        calls = ground_truth_calls(case)
        if index[case.id] not in right[spec.name]:
            calls = [{"name": "no_such_tool", "arguments": {}}]
        return FakeResult(calls, json.dumps(calls), {"seconds": seconds[spec.name], "generated_tokens": 10})

    known = {"greedy": StrategySpec("greedy"), "fine_beam": StrategySpec("fine_beam", 4, 2),
             "best_of_n": StrategySpec("best_of_n", 4, 8)}
    specs = [known[name] for name in right]
    run_bench(cases, specs, path, RunConfig(scorer=scorer), runner, progress=False, lazy_runner=False)
    return path


def test_ceiling_splits_what_is_lost(tmp_path, capsys):
    cases = load_cases("simple_python", 4) + load_cases("parallel", 4)
    greedy = {0, 1, 4}
    oracle = _run(tmp_path / "oracle", "oracle", {"greedy": greedy, "fine_beam": {0, 1, 2, 3, 4, 5, 6}},
                  cases, {"greedy": 1.0, "fine_beam": 3.0})
    policy = _run(tmp_path / "policy", "policy", {"greedy": greedy, "fine_beam": {0, 2, 4, 5}},
                  cases, {"greedy": 2.0, "fine_beam": 5.0})
    out = tmp_path / "ceil"
    assert ceiling.main([f"policy={policy}", f"oracle={oracle}", "--out", str(out)]) == 0
    s = json.loads((out / ceiling.SUMMARY).read_text())
    sp, par = s["categories"]["simple_python"], s["categories"]["parallel"]
    assert (sp["greedy"]["correct"], sp["policy"]["correct"], sp["oracle"]["correct"]) == (2, 2, 4)
    assert (par["greedy"]["correct"], par["policy"]["correct"], par["oracle"]["correct"]) == (1, 2, 3)
    lo, hi = par["oracle"]["ci95"]
    assert lo < 0.75 < hi
    # policy: right where greedy is wrong on cases 2 and 5, wrong where greedy is right on 1
    assert s["paired_vs_greedy"]["policy"] == {"only_a": 2, "only_b": 1, "p": 1.0}
    # each search against greedy of its own run: 5/2 for policy, 3/1 for the oracle
    assert s["cost_vs_greedy"]["policy"]["seconds_ratio"] == pytest.approx(2.5)
    assert s["cost_vs_greedy"]["oracle"]["seconds_ratio"] == pytest.approx(3.0)
    assert sum(s["ceiling_failures"].values()) == 1  # case 7: never proposed
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| parallel |"))
    # missed by the candidates 1 - 3/4, left for the policy 3/4 - 2/4
    assert row.endswith("| 25.0 | 25.0 |"), row
    assert "[ceiling]" in table and (out / ceiling.TABLE).exists()


def test_ceiling_takes_greedy_from_another_run(tmp_path):
    """Greedy is deterministic: an oracle run without it is read against the greedy of
    the scorer's run, on the same cases."""
    cases = load_cases("simple_python", 4)
    oracle = _run(tmp_path / "oracle", "oracle", {"fine_beam": {0, 1, 2}}, cases, {"fine_beam": 3.0})
    # a run holding several ranking strategies (a scaling run) is read for the oracle's
    policy = _run(tmp_path / "policy", "policy", {"greedy": {0}, "best_of_n": {3}, "fine_beam": {0, 1}},
                  cases, {"greedy": 2.0, "best_of_n": 9.0, "fine_beam": 5.0})
    s = ceiling.summarize({"policy": [policy], "oracle": [oracle]})
    assert s["greedy_from"] == "policy"
    c = s["categories"]["simple_python"]
    assert (c["greedy"]["correct"], c["policy"]["correct"], c["oracle"]["correct"]) == (1, 2, 3)
    assert s["cost_vs_greedy"]["oracle"]["seconds_ratio"] == pytest.approx(1.5)
    with pytest.raises(ToolprmError, match="no run holds greedy"):
        ceiling.summarize({"oracle": [oracle]})


def test_ceiling_refuses_runs_it_cannot_compare(tmp_path):
    cases = load_cases("simple_python", 2)
    a = _run(tmp_path / "a", "policy", {"greedy": {0}, "fine_beam": {1}}, cases,
             {"greedy": 1.0, "fine_beam": 1.0})
    with pytest.raises(ToolprmError, match="oracle"):
        ceiling.main([f"policy={a}", "--out", str(tmp_path / "o")])
    with pytest.raises(ToolprmError, match="NAME=DIR"):
        ceiling.main([str(a), "--out", str(tmp_path / "o")])
    with pytest.raises(ToolprmError, match="cases.jsonl"):
        ceiling.main([f"x={tmp_path / 'nothing'}", "--out", str(tmp_path / "o")])


def _bounds_run(path, right: set[int], cases, seconds: float, top_k: int, scorer: str = "oracle"):
    index = {c.id: i for i, c in enumerate(cases)}

    def runner(case, spec, mode):
        ok = spec.name == "greedy" or index[case.id] in right
        calls = ground_truth_calls(case) if ok else [{"name": "no_such_tool", "arguments": {}}]
        return FakeResult(calls, json.dumps(calls), {"seconds": 1.0 if spec.name == "greedy" else seconds})

    specs = [StrategySpec("greedy"), StrategySpec("fine_beam", 4, 2)]
    config = RunConfig(scorer=scorer, top_k=top_k, proposals=top_k // 2)
    run_bench(cases, specs, path, config, runner, progress=False,
              lazy_runner=False)
    return path


def test_bounds_choose_the_cheapest_that_keeps_the_ceiling(tmp_path):
    """bench bounds: the cheapest run within one case of the best ceiling is chosen;
    one that loses more, or is slower, is not; the test set is refused."""
    cases = load_cases("live_simple", 4) + load_cases("live_parallel", 4)
    wide = _bounds_run(tmp_path / "wide", set(range(8)), cases, 6.0, 16)
    mid = _bounds_run(tmp_path / "mid", set(range(7)), cases, 3.0, 8)
    slow = _bounds_run(tmp_path / "slow", set(range(7)), cases, 4.0, 8)
    narrow = _bounds_run(tmp_path / "narrow", {0, 1, 2, 4, 5}, cases, 2.0, 4)
    out = tmp_path / "b"
    runs = [f"wide={wide}", f"mid={mid}", f"slow={slow}", f"narrow={narrow}"]
    assert bounds.main(runs + ["--out", str(out)]) == 0
    s = json.loads((out / bounds.SUMMARY).read_text())
    assert s["best"] == "wide" and s["chosen"] == "mid"
    assert s["runs"]["mid"]["seconds_ratio"] == pytest.approx(3.0)
    assert s["runs"]["narrow"]["bounds"] == {"m": 4, "n": 2, "top_k": 4, "proposals": 2}
    assert s["runs"]["narrow"]["paired_vs_best"] == {"only_a": 0, "only_b": 3, "p": 0.25}
    assert s["runs"]["wide"]["categories"]["live_simple"]["correct"] == 4
    assert bounds.main(runs + ["--out", str(out), "--within", "0"]) == 0
    assert json.loads((out / bounds.SUMMARY).read_text())["chosen"] == "wide"
    test_set = _bounds_run(tmp_path / "t", {0}, load_cases("simple_python", 2), 2.0, 8)
    with pytest.raises(ToolprmError, match="live categories only"):
        bounds.main([f"t={test_set}", "--out", str(out)])
    policy = _bounds_run(tmp_path / "p", {0}, cases, 2.0, 8, scorer="policy")
    with pytest.raises(ToolprmError, match="oracle"):
        bounds.main([f"p={policy}", "--out", str(out)])
