"""bench compare: two runs of one strategy on the same cases (made by the real harness
and BFCL's checker, with scripted outputs), per category and paired."""
from __future__ import annotations

import json

import pytest
from test_harness import FakeResult

from toolprm.bench import compare
from toolprm.bench.harness import RunConfig, StrategySpec, run_bench
from toolprm.bfcl import ground_truth_calls, load_cases
from toolprm.errors import ToolprmError


def _run(path, right: set[int], cases, seconds: float, dtype: str, odd_text: set[int] = frozenset(),
         twice: set[int] = frozenset()):
    index = {c.id: i for i, c in enumerate(cases)}

    def runner(case, spec, mode):
        calls = ground_truth_calls(case) if index[case.id] in right else [{"name": "no_such_tool", "arguments": {}}]
        if index[case.id] in twice:  # the right call, made twice: a wrong number of calls
            calls = ground_truth_calls(case) * 2
        text = json.dumps(calls) + (" " if index[case.id] in odd_text else "")
        return FakeResult(calls, text, {"seconds": seconds, "generated_tokens": 10})

    run_bench(cases, [StrategySpec("greedy")], path, RunConfig(dtype=dtype), runner, progress=False,
              lazy_runner=False)
    return path


def test_compare_pairs_two_runs(tmp_path, capsys):
    cases = load_cases("simple_python", 4) + load_cases("multiple", 4) + load_cases("simple_java", 2)
    a = _run(tmp_path / "a", {0, 1, 2, 4}, cases, 2.0, "float32")
    b = _run(tmp_path / "b" / "shard-0", {0, 1, 4, 5, 6}, cases, 1.0, "int4", odd_text={7}, twice={7})
    out = tmp_path / "cmp"
    assert compare.main([f"fp32={a}", f"int4={tmp_path / 'b'}", "--out", str(out)]) == 0
    s = json.loads((out / "compare.json").read_text())
    sp, allr = s["categories"]["simple_python"], s["categories"]["all"]
    assert (sp["fp32"]["correct"], sp["int4"]["correct"]) == (3, 2)
    assert (allr["fp32"]["correct"], allr["int4"]["correct"]) == (4, 5)
    assert list(s["categories"]) == ["simple_python", "multiple", "simple_java", "all"]  # every one scored
    # identical: cases 0, 1, 3, 4, 8, 9 (both right or both the same wrong text); 7 differs by a space
    assert allr["identical"] == pytest.approx(6 / 10)
    assert allr["paired"] == {"only_a": 2, "only_b": 1, "p": 1.0}  # int4 only: 5, 6; fp32 only: 2
    assert s["seconds_ratio"] == pytest.approx(0.5)
    assert (allr["fp32"]["wrong_count"], allr["int4"]["wrong_count"]) == (0, 1)  # case 7, twice
    assert s["configs"]["int4"]["dtype"] == "int4"
    printed = capsys.readouterr().out
    assert "+10.0 points" in printed
    assert f"- `{a}`: no invocation log" in printed  # where each side ran, as bench report says it
    with pytest.raises(ToolprmError, match="holds no cases.jsonl"):
        compare.main([f"x={a}", f"y={tmp_path / 'nothing'}"])
