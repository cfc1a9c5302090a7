"""The BFCL harness: scoring path, resume, summary and report, and a tiny real run.

Verdicts come from BFCL's own checker (through toolprm.bfcl.check); only
the model is replaced by scripted runners, except in the end-to-end test.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import pytest

from toolprm.bench import harness, report
from toolprm.bfcl import (CATEGORIES, IRRELEVANCE_CATEGORIES, KNOWN_UNSATISFIABLE, LANGUAGE_CATEGORIES, OTHER_CATEGORIES, Case,
                                ground_truth_calls, load_cases)
from toolprm.bench.harness import RunConfig, StrategySpec, calls_for, make_record, run_bench
from toolprm.engine.parse import strict_calls
from toolprm.errors import ToolprmError

PER_CATEGORY = 12
WRONG_STRING = "zq wrong value qz"


@dataclass
class FakeResult:
    calls: list | None
    text: str = ""
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- perturbations


def _wrong_value(alternatives: list):
    """A value of the same kind as the acceptable ones that none of them matches."""
    values = [v for v in alternatives if v != ""]
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return None if len(set(values)) > 1 else not values[0]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return max(values) + 100003
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return float(max(values)) + 100003.5
    if all(isinstance(v, str) for v in values):
        return WRONG_STRING
    return None


def perturb_value(case: Case, calls: list[dict]) -> list[dict] | None:
    """``calls`` with one argument of the first call given an unacceptable value, or None."""
    (name, params), = case.ground_truth[0].items()
    out = copy.deepcopy(calls)
    for param, alternatives in params.items():
        if param not in out[0]["arguments"]:
            continue
        wrong = _wrong_value(alternatives)
        if wrong is not None:
            out[0]["arguments"][param] = wrong
            return out
    return None


def perturb_name(calls: list[dict]) -> list[dict]:
    out = copy.deepcopy(calls)
    out[0]["name"] = out[0]["name"] + "_zq"
    return out


def scripted_runner(kind: str):
    """A runner answering with BFCL's own possible answer, or a perturbed one."""

    def run(case: Case, spec: StrategySpec, calls: str):
        truth = ground_truth_calls(case)
        if spec.name == "truth":
            out = truth
        elif spec.name == "undecodable":
            return FakeResult(None, "Sorry, I cannot help with that.", {"generated_tokens": 8})
        elif case.category in IRRELEVANCE_CATEGORIES:
            first = case.tools[0]
            out = [{"name": first["name"], "arguments": {}}]
        elif spec.name == "wrong_name":
            out = perturb_name(truth)
        elif spec.name == "dropped_call":
            out = truth[:-1]
        elif spec.name == "wrong_value":
            out = perturb_value(case, truth)
            if out is None:
                raise LookupError("no value to perturb")
        else:
            raise AssertionError(spec.name)
        return FakeResult(out, json.dumps(out), {"generated_tokens": len(json.dumps(out)) // 4,
                                                  "forward_passes": 3, "seconds": 0.01})

    return run


SPECS = [StrategySpec(n) for n in ("truth", "wrong_name", "dropped_call", "wrong_value", "undecodable")]


@pytest.mark.parametrize("category", CATEGORIES)
def test_known_answers_correct_and_perturbed_wrong(category, tmp_path):
    cases = [c for c in load_cases(category, PER_CATEGORY) if c.id not in KNOWN_UNSATISFIABLE]
    records = run_bench(cases, SPECS, tmp_path, RunConfig(), scripted_runner("x"), progress=False,
                        lazy_runner=False)
    by = {(r["id"], r["strategy"]): r for r in records}
    assert len(by) == len(cases) * len(SPECS)
    irrelevance = category in IRRELEVANCE_CATEGORIES
    value_perturbed = 0
    for case in cases:
        truth = by[(case.id, "truth")]
        assert truth["correct"] and truth["valid"], (case.id, truth["errors"])
        assert truth["error_type"] == "" and truth["errors"] == []
        for label in ("wrong_name", "dropped_call", "wrong_value"):
            r = by[(case.id, label)]
            if r["exception"]:
                assert label == "wrong_value" and "no value to perturb" in r["exception"]
                assert not r["correct"]
                continue
            value_perturbed += label == "wrong_value"
            assert not r["correct"], (case.id, label, r["calls"])
            assert r["valid"] and r["error_type"], (case.id, label)
        garbage = by[(case.id, "undecodable")]
        assert not garbage["valid"]
        # BFCL: an output that decodes into no call passes irrelevance and fails AST categories.
        assert garbage["correct"] == irrelevance
    if not irrelevance:
        assert value_perturbed >= len(cases) // 2, value_perturbed


def test_exception_counts_wrong_and_run_goes_on(tmp_path):
    cases = load_cases("irrelevance", 2) + load_cases("simple_python", 2)
    calls_seen = []

    def runner(case, spec, calls):
        calls_seen.append(case.id)
        if case.id == cases[0].id:
            raise ToolprmError("unsupported schema")
        return FakeResult(ground_truth_calls(case), "[]")

    records = run_bench(cases, [StrategySpec("truth")], tmp_path, RunConfig(), runner,
                        progress=False, lazy_runner=False)
    assert calls_seen == [c.id for c in cases]
    first = records[0]
    # An irrelevance case whose strategy crashed is not a pass, although no call was made.
    assert first["exception"] == "ToolprmError: unsupported schema"
    assert not first["correct"] and not first["valid"] and first["error_type"] == "exception:ToolprmError"
    assert all(r["correct"] for r in records[1:])
    s = report.summarize(records)
    assert s["overall"]["truth"]["exceptions"] == 1


def test_calls_mode_per_category():
    for cat in CATEGORIES:
        assert calls_for(cat, "any") == "any"
        assert calls_for(cat, "one") == "one"
    assert calls_for("simple_python", "oracle") == "one"
    assert calls_for("live_multiple", "oracle") == "one"
    assert calls_for("parallel_multiple", "oracle") == "one_or_more"
    assert calls_for("irrelevance", "oracle") == "any"
    assert calls_for("live_irrelevance", "oracle") == "any"
    # every loadable category has an answer shape, the held-out others too
    for cat in CATEGORIES + LANGUAGE_CATEGORIES + OTHER_CATEGORIES:
        assert calls_for(cat, "oracle") in ("one", "one_or_more", "any")
    with pytest.raises(ToolprmError):
        calls_for("simple_python", "two")


def test_strategy_labels():
    assert StrategySpec("greedy", 4, 4).label == "greedy"
    assert StrategySpec("outlines").label == "outlines"
    assert StrategySpec("fine_beam", 8, 2).label == "fine_beam(m=8,n=2)"
    assert StrategySpec("best_of_n", 8, 4).label == "best_of_n(n=4)"


# --------------------------------------------------------------------------- resume


class Interrupt(KeyboardInterrupt):
    pass


def test_resume_skips_done_pairs_and_drops_a_torn_line(tmp_path):
    cases = load_cases("simple_python", 3)
    specs = [StrategySpec("truth"), StrategySpec("wrong_name")]
    base = scripted_runner("x")
    calls = []

    def interrupted(case, spec, mode):
        if len(calls) == 4:
            raise Interrupt()
        calls.append((case.id, spec.label))
        return base(case, spec, mode)

    with pytest.raises(KeyboardInterrupt):
        run_bench(cases, specs, tmp_path, RunConfig(), interrupted, progress=False, lazy_runner=False)
    path = tmp_path / report.CASES_FILE
    assert len(path.read_text().splitlines()) == 4
    with open(path, "a") as f:  # killed in the middle of writing a fifth record
        f.write('{"id": "simple_python_2", "strategy": "tru')

    calls.clear()

    def counting(case, spec, mode):
        calls.append((case.id, spec.label))
        return base(case, spec, mode)

    records = run_bench(cases, specs, tmp_path, RunConfig(), lambda: counting, progress=False)
    assert len(calls) == 2 and set(calls).isdisjoint(
        {(r["id"], r["strategy"]) for r in records[:4]})
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)
    assert {(r["id"], r["strategy"]) for r in map(json.loads, lines)} == {
        (c.id, s.label) for c in cases for s in specs}
    assert [r["correct"] for r in records] == [True, False] * 3

    def must_not_load():
        raise AssertionError("nothing left to run: the model must not be loaded")

    again = run_bench(cases, specs, tmp_path, RunConfig(), must_not_load, progress=False)
    assert again == records

    with pytest.raises(ToolprmError, match="max_new_tokens"):
        run_bench(cases, specs, tmp_path, RunConfig(max_new_tokens=64), must_not_load, progress=False)

    # A folder made before a setting existed resumes under that setting's default.
    run_file = tmp_path / report.RUN_FILE
    old = json.loads(run_file.read_text())
    del old["config"]["scorer"]
    run_file.write_text(json.dumps(old))
    assert run_bench(cases, specs, tmp_path, RunConfig(), must_not_load, progress=False) == records
    with pytest.raises(ToolprmError, match="scorer"):
        run_bench(cases, specs, tmp_path, RunConfig(scorer="policy"), must_not_load, progress=False)

    # What a worker wrote (--jobs J: OUT/shard-K) is part of the folder: one process
    # resuming it runs none of those pairs again, and reading the folder reads them.
    lines = path.read_text().splitlines()
    (tmp_path / "shard-0").mkdir()
    (tmp_path / "shard-0" / report.CASES_FILE).write_text("\n".join(lines[2:]) + "\n")
    path.write_text("\n".join(lines[:2]) + "\n")
    assert run_bench(cases, specs, tmp_path, RunConfig(), must_not_load, progress=False) == records
    assert len(path.read_text().splitlines()) == 2
    assert sorted(map(json.dumps, report.load_records(tmp_path))) == sorted(map(json.dumps, records))


# --------------------------------------------------------------------------- summary, report


def _run(tmp_path, name, categories, limit, runner_kind="truth"):
    out = tmp_path / name
    cases = [c for cat in categories for c in load_cases(cat, limit)]
    run_bench(cases, [StrategySpec(runner_kind)], out, RunConfig(), scripted_runner("x"),
              progress=False, lazy_runner=False)
    return out


def test_summary_non_live_ast_is_unweighted_mean(tmp_path):
    cases = load_cases("simple_python", 4) + load_cases("multiple", 2)

    def runner(case, spec, mode):  # right on simple_python, wrong on multiple
        calls = ground_truth_calls(case)
        return FakeResult(calls if case.category == "simple_python" else perturb_name(calls), "")

    records = run_bench(cases, [StrategySpec("s")], tmp_path, RunConfig(), runner, progress=False,
                        lazy_runner=False)
    s = report.summarize(records)
    assert s["results"]["s"]["simple_python"]["accuracy"] == 1.0
    assert s["results"]["s"]["multiple"]["accuracy"] == 0.0
    assert s["overall"]["s"]["accuracy"] == pytest.approx(4 / 6)
    nl = s["non_live_ast"]["s"]
    assert nl["accuracy"] == pytest.approx(0.5) and nl["categories"] == ["simple_python", "multiple"]
    assert not nl["complete"]
    table = report.tables(s, records)
    # BFCL's own summary needs all six of its categories; the Python-only mean says it holds two of four
    assert "| s | 100.0 (4/4) [51, 100] | 0.0 (0/2) [0, 66] | 50.0 [50.0, 50.0] (2/4 cat.) | N/A |" in table
    assert "| non-live AST, Python only [95% CI] | BFCL Non-Live AST [95% CI] |" in table


def test_report_merges_runs(tmp_path, capsys):
    a = _run(tmp_path, "a", ["simple_python"], 3)
    b = _run(tmp_path, "b", ["multiple"], 2)
    c = _run(tmp_path, "c", ["simple_python"], 3, "wrong_name")
    d = _run(tmp_path, "d", ["simple_python"], 2)  # same label and cases as a: kept apart
    out = tmp_path / "merged"
    assert report.main([str(a), str(b), str(c), str(d), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    intervals, _, rest = text.partition("\n\n")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in intervals.splitlines()[2:] if line.startswith("|")}
    assert list(rows) == ["truth@a", "truth@b", "wrong_name", "truth@d"]
    # every accuracy with its interval, each strategy paired with the first on the same cases
    assert rows["wrong_name"].startswith("| wrong_name | 0.0 (0/3) [0, 56] |")
    assert "truth@a against it on the non-live AST cases" in intervals and "| 3 / 0, p = 0.25 |" in intervals
    # then category by category (truth@b ran other cases than truth@a: nothing to pair)
    assert "| wrong_name | 3 / 0 (p = 0.25) | — | 3 / 0 (p = 0.25) |" in rest
    assert "| truth@b | — | — | — |" in rest and "| truth@d | 0 / 0 (p = 1) | — | 0 / 0 (p = 1) |" in rest
    assert f"- `{a}`: no invocation log" in rest  # _run writes records, not a log
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    assert summary["results"]["wrong_name"]["simple_python"]["accuracy"] == 0.0
    for png in (report.PLOT_CATEGORIES, report.PLOT_COMPUTE):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a and b alone score different categories with the same settings: one row.
    assert report.main([str(a), str(b), "--out", str(out), "--no-plots"]) == 0
    table = capsys.readouterr().out.split("\n\n", 1)[0]
    (row,) = [line for line in table.splitlines() if line.startswith("| truth")]
    assert row.startswith("| truth | 100.0 (3/3) [44, 100] | 100.0 (2/2) [34, 100] |")


def test_report_refuses_a_folder_without_cases(tmp_path):
    with pytest.raises(ToolprmError, match="cases.jsonl"):
        report.main([str(tmp_path)])


def test_report_reads_a_folder_of_shards(tmp_path, capsys):
    _run(tmp_path, "a/shard-0", ["simple_python"], 2)  # what --jobs J writes: records in shards only
    _run(tmp_path, "a/shard-1", ["multiple"], 1)
    assert report.main([str(tmp_path / "a"), "--no-plots"]) == 0
    assert "| truth | 100.0 (2/2) [34, 100] | 100.0 (1/1) [21, 100] |" in capsys.readouterr().out


def test_strict_calls():
    assert strict_calls('[{"name": "f", "arguments": {"a": 1}}]') == [{"name": "f", "arguments": {"a": 1}}]
    assert strict_calls("[]") == []
    assert strict_calls('[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "argu') is None
    assert strict_calls('{"name": "f", "arguments": {}}') is None


# --------------------------------------------------------------------------- real model


def test_outlines_schema_is_the_grammar_schema():
    from toolprm.engine import get_policy
    from toolprm.grammar import DEFAULT_MAX_CALLS, call_list_schema, compile, normalize_tools

    smollm2_tokenizer = get_policy().tokenizer  # the policy the end-to-end test uses too
    case = load_cases("parallel_multiple", 1)[0]
    norm = normalize_tools(case.tools)
    for mode in ("any", "one"):
        assert call_list_schema(norm, mode, DEFAULT_MAX_CALLS) == compile(case.tools, smollm2_tokenizer,
                                                                          mode).schema


def test_end_to_end_real_model(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("outlines")
    threads = torch.get_num_threads()
    out = tmp_path / "run"
    # unconstrained runs through engine.generate exactly as greedy does; left out for time.
    argv = ["--category", "simple_python", "--limit", "1", "--strategy", "greedy", "--strategy",
            "outlines", "--max-new-tokens", "32", "--threads", "1", "--out", str(out), "--quiet"]
    try:
        assert harness.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    table = capsys.readouterr().out
    records = report.load_records(out)
    assert [r["strategy"] for r in records] == ["greedy", "outlines"]
    for r in records:
        assert r["id"] == "simple_python_0" and r["generated_tokens"] > 0 and r["seconds"] > 0
        assert r["forward_passes"] >= 1 and r["exception"] is None
    greedy, outl = records
    assert greedy["valid"] and outl["valid"]  # constrained outputs always decode
    assert greedy["calls"][0]["name"] == "calculate_triangle_area"
    assert outl["stats"]["compile_seconds"] > 0
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    assert summary["strategies"] == ["greedy", "outlines"]
    assert summary["config"]["max_new_tokens"] == 32
    assert summary["results"]["greedy"]["simple_python"]["n"] == 1
    # greedy's wall time and compute against the outlines peer on the same case
    ratio = summary["time_vs_reference"]["greedy"]
    assert ratio["reference"] == "outlines" and ratio["n_paired"] == 1
    assert ratio["seconds_ratio"] == pytest.approx(greedy["seconds"] / outl["seconds"], rel=1e-9)
    work = lambda r: sum(r["stats"].get(k) or 0 for k in ("generated_tokens", "forced_tokens", "chosen_tokens",
                                                          "scorer_calls"))
    assert ratio["compute_ratio"] == pytest.approx(work(greedy) / work(outl), rel=1e-9)
    greedy_row = next(line for line in table.splitlines() if line.startswith("| greedy | 100.0 |"))  # cost table
    assert f"| {greedy['seconds'] / outl['seconds']:.2f} (n=1) |" in greedy_row, greedy_row
    for png in (report.PLOT_CATEGORIES, report.PLOT_COMPUTE):
        assert (out / png).stat().st_size > 1000
    assert "| greedy |" in table and "| outlines |" in table and "time ÷ outlines" in table

    # Rerun: everything is done, so nothing is generated and the records stay as they were.
    assert harness.main(argv) == 0
    assert report.load_records(out) == records
    # Each invocation logged its command, machine and setup, then its wall time; the
    # report states them under its table.
    log = [json.loads(line) for line in (out / report.INVOCATIONS_FILE).read_text().splitlines()]
    assert [bool(e.get("ended")) for e in log] == [False, True, False, True]
    assert log[0]["started"] == log[1]["started"] and log[0]["command"].endswith(" ".join(argv))
    assert log[0]["jobs"] == 1 and log[0]["threads"] == 1 and log[0]["machine"]["cores"] >= 1
    assert log[1]["seconds"] > 0
    capsys.readouterr()
    assert report.main([str(out), "--no-plots"]) == 0
    note = capsys.readouterr().out.split("Runs (from each folder's invocation log):")[1]
    assert f"- `{out}`: 2 invocation(s), " in note and "1 job(s) × 1 thread(s)" in note
    assert log[0]["machine"]["cpu"] in note


def test_time_ratio_pairs_cases_of_the_same_run():
    def rec(strategy, case_id, seconds, run=None):
        r = {"id": case_id, "category": "simple_python", "strategy": strategy, "correct": True,
             "valid": True, "seconds": seconds}
        return r if run is None else dict(r, run=run)

    records = [rec("greedy", "a", 1.0), rec("outlines", "a", 4.0), rec("greedy", "b", 3.0)]
    ratio = report.summarize(records)["time_vs_reference"]["greedy"]
    assert ratio["n_paired"] == 1 and ratio["seconds_ratio"] == pytest.approx(0.25)
    merged = [rec("greedy", "a", 1.0, "x"), rec("outlines@x", "a", 2.0, "x"),
              rec("greedy@y", "a", 3.0, "y"), rec("outlines@y", "a", 12.0, "y")]
    ratios = report.summarize(merged)["time_vs_reference"]
    assert ratios["greedy"]["seconds_ratio"] == pytest.approx(0.5)
    assert ratios["greedy@y"]["seconds_ratio"] == pytest.approx(0.25)


def test_sharded_chunks_skip_pairs_another_shard_holds():
    """A worker writes to its own shard and sees only it: a chunk must carry only the
    strategies its cases lack in every shard, or a resumed run repeats finished pairs."""
    from toolprm.bench.harness import plan_chunks
    cases = load_cases("simple_python", 5)
    specs = [StrategySpec("greedy"), StrategySpec("fine_beam", 4, 2), StrategySpec("majority", 4, 8)]
    done = {(c.id, s.label) for c in cases[:3] for s in specs[:2]} | {(cases[4].id, s.label) for s in specs}
    chunks = plan_chunks(cases, specs, done, 2)
    plan = [([c.id for c in ch], [s.label for s in sp]) for ch, sp in chunks]
    assert plan == [([cases[0].id, cases[1].id], ["majority(n=8)"]), ([cases[2].id], ["majority(n=8)"]),
                    ([cases[3].id], [s.label for s in specs])]


def test_prm_option_reads_another_head(tmp_path):
    """--prm points the hybrid scorer at another checkpoint folder: a copy of the shipped
    head whose [] calibration is huge makes fine_beam answer [] on a relevant case."""
    import hashlib
    import shutil

    import torch
    from toolprm.reward.prm import CALIBRATION, SHIPPED, WEIGHTS

    folder = tmp_path / "head"
    shutil.copytree(SHIPPED, folder)
    (folder / CALIBRATION).unlink(missing_ok=True)
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    (folder / CALIBRATION).write_text(json.dumps({"empty_log_odds": 50.0, "weights_sha256": digest}))
    out = tmp_path / "run"
    argv = ["--category", "simple_python", "--limit", "1", "--strategy", "fine_beam", "-m", "2", "-n", "1",
            "--max-new-tokens", "64", "--threads", "1", "--prm", str(folder), "--out", str(out), "--quiet",
            "--no-plots"]
    threads = torch.get_num_threads()
    try:
        assert harness.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    (record,) = report.load_records(out)
    assert record["calls"] == [] and not record["correct"]
    assert json.loads((out / report.RUN_FILE).read_text())["config"]["prm"] == str(folder)
    with pytest.raises(ToolprmError, match="other settings"):  # the shipped head is another setting
        harness.main([a for a in argv if a not in ("--prm", str(folder))])
    with pytest.raises(ToolprmError, match="no PRM checkpoint"):
        harness.main(argv[:-6] + ["--prm", str(tmp_path / "none"), "--out", str(tmp_path / "x")])
    with pytest.raises(ToolprmError, match="not by 'policy'"):
        harness.main(argv + ["--scorer", "policy"])
    with pytest.raises(ToolprmError, match="--keys is read by the prm and hybrid scorers"):
        harness.main(argv[:-6] + ["--keys", "policy", "--scorer", "policy", "--out", str(tmp_path / "y")])


def test_report_intervals_cover_categories_outside_the_test_set(tmp_path, capsys):
    a = _run(tmp_path, "a", ["live_simple", "coordinated"], 2)
    assert report.main([str(a), "--no-plots"]) == 0
    intervals = capsys.readouterr().out.split("\n\n")[0]
    head, rule, row = intervals.splitlines()[:3]
    assert head.startswith("| strategy | live_simple | coordinated | non-live AST")
    assert head.count("|") == rule.count("|") == row.count("|")  # no empty column
    assert "| truth | 100.0 (2/2) [34, 100] | 100.0 (2/2) [34, 100] |" in row


def test_distinct_values_is_a_setting_of_the_folder(tmp_path):
    """--distinct-values is recorded in run.json: a resume must repeat it, and a folder
    written before the option existed reads as run without the rule."""
    import torch
    out = tmp_path / "run"
    argv = ["--category", "live_simple", "--limit", "1", "--max-new-tokens", "48", "--threads", "1",
            "--out", str(out), "--quiet", "--no-plots"]
    threads = torch.get_num_threads()
    try:
        assert harness.main(argv + ["--distinct-values"]) == 0
        assert json.loads((out / report.RUN_FILE).read_text())["config"]["distinct_values"] is True
        with pytest.raises(ToolprmError, match="distinct_values: True there, False now"):
            harness.main(argv + ["--no-distinct-values"])
        old = json.loads((out / report.RUN_FILE).read_text())
        del old["config"]["distinct_values"]
        (out / report.RUN_FILE).write_text(json.dumps(old))
        assert harness.main(argv + ["--no-distinct-values"]) == 0  # nothing left to run
        with pytest.raises(ToolprmError, match="distinct_values: False there, True now"):
            harness.main(argv + ["--distinct-values"])
    finally:
        torch.set_num_threads(threads)


def test_paired_by_category_counts_each_category_apart():
    """greedy alone right on three simple_python cases, the search alone right on two
    multiple cases: each category gets its own counts and exact p, and over every case
    3 against 2 is no difference (p = 1)."""
    records = []
    for i in range(3):
        records += [{"strategy": s, "id": f"simple_python_{i}", "category": "simple_python", "correct": s == "greedy"}
                    for s in ("greedy", "fine_beam")]
    for i in range(2):
        records += [{"strategy": s, "id": f"multiple_{i}", "category": "multiple", "correct": s != "greedy"}
                    for s in ("greedy", "fine_beam")]
    table = report.paired_by_category(records, ["greedy", "fine_beam"])
    assert "| strategy | simple_python | multiple | every case |" in table
    assert "| fine_beam | 3 / 0 (p = 0.25) | 0 / 2 (p = 0.5) | 3 / 2 (p = 1) |" in table
    assert report.paired_by_category(records, ["greedy"]) == ""  # nothing to pair


def test_an_oracle_run_is_labelled_a_ceiling(tmp_path):
    records = [{**r, "strategy": "fine_beam(m=4,n=2)"} for r in report.load_records(_run(tmp_path, "a", ["simple_python"], 2))]
    text = report.tables(report.summarize(records, None, {"scorer": "oracle"}), records)
    assert text.startswith("Scorer: the oracle, which reads the ground truth")
    assert "not a result (the rows of fine_beam(m=4,n=2))." in text
    assert not report.tables(report.summarize(records, None, {"scorer": "default"}), records).startswith("Scorer")
