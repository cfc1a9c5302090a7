"""`toolprm bench scaling`: budgets, verdict, README block, and a tiny real run in two processes."""
from __future__ import annotations

import json

import pytest

from toolprm.bench import report, scaling
from toolprm.bench.harness import StrategySpec
from toolprm.errors import ToolprmError
from toolprm.train import stats


def test_grid_lists_are_checked():
    assert scaling._ints("2,4, 8") == [2, 4, 8]
    for bad in ("2,x", "", "0,2", "-1"):
        with pytest.raises(ToolprmError, match="integers"):
            scaling._ints(bad)


def test_baselines_share_the_fine_beam_budget():
    labels = [s.label for s in scaling.specs_for(4, 2, [2, 4], [1, 2])]
    assert labels[:6] == ["unconstrained", "outlines", "greedy", "majority(n=8)", "best_of_n(n=8)",
                          "coarse_beam(m=4,n=2)"]
    assert labels[6:] == ["fine_beam(m=2,n=1)", "fine_beam(m=2,n=2)", "fine_beam(m=4,n=1)",
                          "fine_beam(m=4,n=2)"]
    # The matched-budget fine_beam row is added when the grid lacks it, and never twice.
    only = [s.label for s in scaling.specs_for(8, 2, [2], [1], baselines=scaling.baselines_arg(""))]
    assert only == ["fine_beam(m=2,n=1)", "fine_beam(m=8,n=2)"]
    some = [s.label for s in scaling.specs_for(4, 2, [4], [2], scaling.baselines_arg("greedy, majority"))]
    assert some == ["greedy", "majority(n=8)", "fine_beam(m=4,n=2)"]
    with pytest.raises(ToolprmError, match="unknown baseline 'beam'"):
        scaling.baselines_arg("greedy,beam")


def _grid(right: dict[tuple[int, int], int], cases: int = 40) -> tuple[dict, list[dict]]:
    """A summary and per-case records where fine_beam(m, n) gets the first right[m, n]
    of ``cases`` parallel cases right."""
    labels = {StrategySpec("fine_beam", m, n).label: k for (m, n), k in right.items()}
    summary = {"non_live_ast": {lab: {"accuracy": k / cases} for lab, k in labels.items()},
               "overall": {lab: {"accuracy": k / cases} for lab, k in labels.items()}}
    records = [{"id": f"p{i}", "category": "parallel", "strategy": lab, "correct": i < k}
               for lab, k in labels.items() for i in range(cases)]
    return summary, records


def test_verdict_rests_on_paired_tests_at_an_equal_budget():
    # (8,1) against (4,2) and (4,1) against (2,2) are the equal-budget pairs of this grid.
    grid_m, grid_n = [2, 4, 8], [1, 2]
    more_m = _grid({(2, 1): 5, (2, 2): 6, (4, 1): 20, (4, 2): 8, (8, 1): 30, (8, 2): 31})
    said = scaling.explore_more_retain_less(*more_m[:1], grid_m, grid_n, more_m[1])
    assert "+62.5 points" in said  # (30 - 5 + 31 - 6) / 2 of 40
    # 22 and 14 discordant cases, all one way: p = 2 * 0.5**22 and 2 * 0.5**14, times 2 pairs.
    assert "fine_beam(8,1) against fine_beam(4,2): right only with the first 22, only with the second 0" in said
    assert "fine_beam(4,1) against fine_beam(2,2): right only with the first 14" in said
    assert f"holds on these cases (Bonferroni p = {4 * 0.5 ** 22:.3g})" in said

    more_n = _grid({(2, 1): 5, (2, 2): 25, (4, 1): 6, (4, 2): 30, (8, 1): 7, (8, 2): 31})
    said = scaling.explore_more_retain_less(*more_n[:1], grid_m, grid_n, more_n[1])
    assert "does not hold on these cases" in said

    # More M wins one pair, more N the other: not shown, whatever the mean gains say.
    mixed = _grid({(2, 1): 5, (2, 2): 6, (4, 1): 20, (4, 2): 30, (8, 1): 25, (8, 2): 31})
    said = scaling.explore_more_retain_less(*mixed[:1], grid_m, grid_n, mixed[1])
    assert "is not shown at this size" in said
    # Leaning one way, but too few cases apart for the test.
    close = _grid({(2, 1): 5, (2, 2): 6, (4, 1): 8, (4, 2): 6, (8, 1): 9, (8, 2): 9})
    said = scaling.explore_more_retain_less(*close[:1], grid_m, grid_n, close[1])
    assert "is not shown at this size" in said

    assert "incomplete" in scaling.explore_more_retain_less(*more_n[:1], [2], [1, 2], more_n[1])
    square = _grid({(2, 1): 5, (2, 2): 6, (8, 1): 9, (8, 2): 9})
    assert "share a budget" in scaling.explore_more_retain_less(*square[:1], [2, 8], [1, 2], square[1])


def test_readme_block_is_replaced_per_model(tmp_path):
    readme = tmp_path / "README.md"
    s0, e0 = scaling.markers("smollm2")
    s1, e1 = scaling.markers("qwen2.5-coder-0.5b")
    readme.write_text(f"intro\n{s0}\nold\n{e0}\nmiddle\n{s1}\nold qwen\n{e1}\nend\n")
    scaling.update_readme(readme, "new table", "smollm2")
    scaling.update_readme(readme, "qwen table", "qwen2.5-coder-0.5b")
    assert readme.read_text() == (f"intro\n{s0}\nnew table\n{e0}\nmiddle\n{s1}\nqwen table\n{e1}\nend\n")
    with pytest.raises(ToolprmError, match="scaling-results:other"):
        scaling.update_readme(readme, "x", "other")


def test_two_process_run_merges_shards_and_writes_the_readme(tmp_path, capsys):
    pytest.importorskip("torch")
    out, readme = tmp_path / "run", tmp_path / "README.md"
    start, end = scaling.markers("smollm2")
    readme.write_text(f"# r\n{start}\nold\n{end}\n")
    argv = ["--limit", "1", "--category", "simple_python", "--category", "irrelevance",
            "--baselines", "", "--grid-m", "2", "--grid-n", "1", "-m", "2", "-n", "1", "--jobs", "2",
            "--threads", "1", "--max-new-tokens", "48", "--out", str(out), "--readme", str(readme)]
    assert scaling.main(argv) == 0
    # Each worker took one chunk (which one is the scheduler's choice); the merged
    # summary covers both categories.
    shard_ids = [[r["id"] for r in report.load_records(out / f"shard-{k}")] for k in range(2)]
    assert sorted(shard_ids) == [["irrelevance_0"], ["simple_python_0"]]
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    res = summary["results"]["fine_beam(m=2,n=1)"]
    assert res["simple_python"]["n"] == 1 and res["irrelevance"]["n"] == 1
    for png in ("accuracy_vs_compute_all.png", "fine_beam_grid.png"):
        assert (out / png).stat().st_size > 1000
    text = readme.read_text()
    assert "\nold\n" not in text and "| fine_beam(m=2,n=1) |" in text
    assert "simple_python: 1, irrelevance: 1" in text
    assert json.loads((out / "scaling.json").read_text())["cases_per_category"] == {
        "simple_python": 1, "irrelevance": 1}
    # The block says where and how the run ran, from the folder's invocation log.
    assert "1 invocation(s)" in text and "2 job(s) × 1 thread(s)" in text
    # A rerun finds every pair done and only re-summarizes.
    capsys.readouterr()
    assert scaling.main(argv) == 0
    assert [[r["id"] for r in report.load_records(out / f"shard-{k}")] for k in range(2)] == shard_ids
    log = [json.loads(line) for line in (out / report.INVOCATIONS_FILE).read_text().splitlines()]
    assert len(log) == 4 and log[0]["command"].startswith("toolprm bench scaling --limit 1")
    assert [e.get("ended", False) for e in log] == [False, True, False, True]
    # --no-run summarizes what the folder holds, here with one more category it lacks
    assert scaling.main(argv + ["--no-run", "--category", "multiple"]) == 0
    assert [[r["id"] for r in report.load_records(out / f"shard-{k}")] for k in range(2)] == shard_ids
    with pytest.raises(ToolprmError, match="holds no record"):
        scaling.main(argv[:-4] + ["--out", str(tmp_path / "empty"), "--no-run"])


def _rec(strategy: str, cat: str, i: int, ok: bool) -> dict:
    scored = strategy.startswith("fine_beam")
    return {"strategy": strategy, "category": cat, "id": f"{cat}_{i}", "correct": ok, "valid": True,
            "seconds": 1.0, "generated_tokens": 10, "scorer_calls": 4 * scored,
            "stats": {"scorer_seconds": 0.25 * scored}}


def test_table_gives_intervals_and_pairs_each_strategy_with_fine_beam():
    fb, gr = "fine_beam(m=4,n=2)", "greedy"
    right = {fb: {("simple_python", 0), ("simple_python", 1), ("multiple", 0), ("multiple", 1)},
             gr: {("simple_python", 0), ("multiple", 2)}}
    records = [_rec(s, c, i, (c, i) in right[s]) for s in (gr, fb)
               for c in ("simple_python", "multiple") for i in range(4)]
    # irrelevance is reported beside the non-live AST mean, not in its paired test
    records += [_rec(s, "irrelevance", i, s == fb) for s in (gr, fb) for i in range(2)]
    summary = report.summarize(records, [gr, fb], {})
    specs = [StrategySpec("greedy"), StrategySpec("fine_beam", 4, 2)]
    table = scaling.scaling_table(summary, specs, {"simple_python": 4, "multiple": 4, "irrelevance": 2},
                                  records, fb)
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    # greedy: right on 2 of 8; fine_beam right where greedy is wrong on 3, the reverse on 1
    assert "| 3 / 1, p = 0.625 |" in rows[gr]
    assert f"| {report._pct(0.25)} [" in rows[gr] and rows[fb].count("—") == 1
    lo, hi = stats.wilson(2, 4)
    assert f"50.0 (2/4) [{100 * lo:.0f}, {100 * hi:.0f}]" in rows[fb]
    assert rows[fb].endswith("| 25.0% |") and rows[gr].endswith("| — |")  # time in the scorer
    # BFCL's own summary needs every one of its categories: N/A here, and the footnote says why
    assert "| N/A |" in rows[gr] and "(here: parallel, parallel_multiple, simple_java, simple_javascript)" in table
    assert "the same for every strategy" in table
    # a run still under way: fine_beam lacks two multiple cases, and the note says so
    part = [r for r in records if not (r["strategy"] == fb and r["id"] in ("multiple_2", "multiple_3"))]
    table = scaling.scaling_table(report.summarize(part, [gr, fb], {}), specs,
                                  {"simple_python": 4, "multiple": 4, "irrelevance": 2}, part, fb)
    assert "the same for every strategy" not in table
    assert "not the same cases for every strategy in multiple (" in table
    assert "50.0 (1/2)" not in table and "100.0 (2/2)" in table  # fine_beam's own count on multiple


def test_table_gives_bfcls_own_summary_where_every_category_ran():
    """BFCL Non-Live AST = mean(mean(simple_python, simple_java, simple_javascript),
    multiple, parallel, parallel_multiple): a hand-computed case."""
    right = {"simple_python": 4, "simple_java": 2, "simple_javascript": 0, "multiple": 1, "parallel": 3,
             "parallel_multiple": 0}
    records = [_rec("greedy", c, i, i < k) for c, k in right.items() for i in range(4)]
    summary = report.summarize(records, ["greedy"], {})
    table = scaling.scaling_table(summary, [StrategySpec("greedy")], {c: 4 for c in right}, records, "greedy")
    row = next(l for l in table.splitlines() if l.startswith("| greedy |"))
    simple = (1.0 + 0.5 + 0.0) / 3
    official = (simple + 0.25 + 0.75 + 0.0) / 4      # 0.375
    python_only = (1.0 + 0.25 + 0.75 + 0.0) / 4     # 0.5
    assert f"| {report._pct(official)} [" in row and f"| {report._pct(python_only)} [" in row
    assert "simple_java" in table.splitlines()[0] and "N/A" not in row


def test_bootstrap_interval_of_a_mean_over_groups():
    assert stats.mean_of_groups_ci([[True] * 5, [False] * 5]) == (0.5, 0.5)  # no spread within groups
    lo, hi = stats.mean_of_groups_ci([[True, False] * 10, [True] * 20])
    assert lo < 0.75 < hi and hi <= 1.0 and lo >= 0.5
    assert stats.mean_of_groups_ci([[True, False] * 10]) == stats.mean_of_groups_ci([[True, False] * 10])
    # weights: a third of the first group's accuracy against the second's
    assert stats.mean_of_groups_ci([[True] * 5, [False] * 5], weights=[1 / 3, 1]) == (0.25, 0.25)
    with pytest.raises(ValueError, match="weights"):
        stats.mean_of_groups_ci([[True]], weights=[1, 2])
