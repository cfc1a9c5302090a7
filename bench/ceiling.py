"""How far a search is from a perfect scorer, on the same cases.

``toolprm bench ceiling NAME=DIR[,DIR...] ...`` reads harness runs (``toolprm bench
bfcl``) that share their cases: one made with ``--scorer oracle`` (the ceiling: a
scorer that reads the ground truth, a diagnostic only) and any others (``--scorer
policy``, the shipped PRM, ...). Per category it reports greedy, each scorer's
beam search and the ceiling, with 95% Wilson intervals, and splits what is lost
into two numbers: what the candidates miss (1 - ceiling: no scorer could have
picked the right answer, it was never proposed) and what is left for the scorer
(ceiling - the scorer's accuracy). Each scorer's search is paired with greedy on
the same cases (McNemar's exact test). Only cases every run scored are counted.
Greedy comes from the oracle run, or where that has none from the first run that
has it (greedy is deterministic: one run of it serves every search).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from toolprm.bfcl import CATEGORIES
from toolprm.errors import ToolprmError

from .report import NON_LIVE_AST, RANKING, _read_config, compute, load_records, replace_block
from toolprm.train.stats import paired, wilson

GREEDY = "greedy"
SUMMARY = "ceiling.json"
TABLE = "ceiling.md"


def _runs(specs: list[str]) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, dirs = spec.partition("=")
        if not sep or not name or not dirs:
            raise ToolprmError(f"a run is NAME=DIR[,DIR...], got {spec!r}")
        paths = [Path(d) for d in dirs.split(",") if d]
        for p in paths:
            if not (p / "cases.jsonl").exists():
                raise ToolprmError(f"run {name!r}: {p} holds no cases.jsonl (made by `toolprm bench bfcl`)")
        runs[name] = paths
    return runs


def _load(runs: dict[str, list[Path]]) -> tuple[str, dict[str, dict[str, dict]], dict[str, dict[str, dict]]]:
    """(the oracle run's name, per run: case id -> the ranking strategy's record,
    per run: case id -> greedy's record)."""
    oracle, searched, greedy = None, {}, {}
    for name, dirs in runs.items():
        scorers = {_read_config(d).get("scorer") for d in dirs}
        if len(scorers) != 1:
            raise ToolprmError(f"run {name!r} mixes folders made with different scorers: {sorted(map(str, scorers))}")
        if scorers == {"oracle"}:
            if oracle is not None:
                raise ToolprmError(f"two oracle runs given: {oracle!r} and {name!r}")
            oracle = name
        greedy[name] = {}
        by_label: dict[str, dict[str, dict]] = {}
        for d in dirs:
            for r in load_records(d):
                if r["strategy"] == GREEDY:
                    greedy[name][r["id"]] = r
                elif r["strategy"].split("(")[0] in RANKING:
                    by_label.setdefault(r["strategy"], {})[r["id"]] = r
        searched[name] = by_label
    if oracle is None:
        raise ToolprmError("no run made with --scorer oracle among " + ", ".join(runs))
    if len(searched[oracle]) != 1:
        raise ToolprmError(f"run {oracle!r} must hold exactly one ranking strategy, found "
                           f"{sorted(searched[oracle]) or 'none'}")
    label = next(iter(searched[oracle]))
    for name, by_label in searched.items():
        # a run holding several (a scaling run's baselines) is read for the oracle's strategy
        if label not in by_label and len(by_label) != 1:
            raise ToolprmError(f"run {name!r} must hold {label} or exactly one ranking strategy, found "
                               f"{sorted(by_label) or 'none'}")
        searched[name] = by_label.get(label) or next(iter(by_label.values()))
    if not any(greedy.values()):
        raise ToolprmError("no run holds greedy records (run `toolprm bench bfcl` with "
                           "--strategy greedy beside one of the searches)")
    return oracle, searched, greedy


def _greedy_run(oracle: str, greedies: dict[str, dict[str, dict]]) -> str:
    """The run whose greedy is the reference: the oracle's where it has one, else the
    first that has (greedy is deterministic, so one run of it serves every search)."""
    return oracle if greedies[oracle] else next(n for n, g in greedies.items() if g)


def summarize(runs: dict[str, list[Path]]) -> dict:
    oracle, searched, greedies = _load(runs)
    greedy_from = _greedy_run(oracle, greedies)
    greedy = greedies[greedy_from]
    ids = set(greedy).intersection(*(set(r) for r in searched.values()))
    if not ids:
        raise ToolprmError("the runs share no scored case")
    cats = [c for c in CATEGORIES if any(greedy[i]["category"] == c for i in ids)]
    names = [n for n in runs if n != oracle] + [oracle]
    rows = {GREEDY: {i: greedy[i] for i in ids}, **{n: {i: searched[n][i] for i in ids} for n in names}}

    def acc(name: str, cat: str | None) -> dict:
        rs = [r for r in rows[name].values() if cat is None or r["category"] == cat]
        k = sum(bool(r["correct"]) for r in rs)
        lo, hi = wilson(k, len(rs))
        return {"correct": k, "n": len(rs), "accuracy": k / len(rs) if rs else None, "ci95": [lo, hi]}

    per_cat = {c: {n: acc(n, c) for n in rows} for c in cats}
    nl = [c for c in NON_LIVE_AST if c in per_cat]
    non_live = {n: sum(per_cat[c][n]["accuracy"] for c in nl) / len(nl) for n in rows} if nl else {}
    order = sorted(ids)
    tests = {n: paired([bool(rows[n][i]["correct"]) for i in order], [bool(greedy[i]["correct"]) for i in order])
             for n in names}

    def ratio(name: str, f) -> float | None:
        """Against greedy of the same run (the same machine and load) where it has one."""
        own = greedies[name] if ids <= set(greedies[name]) else greedy
        ref = sum(f(own[i]) for i in ids)
        return sum(f(rows[name][i]) for i in ids) / ref if ref > 0 else None

    costs = {n: {"seconds_ratio": ratio(n, lambda r: float(r.get("seconds") or 0)),
                 "compute_ratio": ratio(n, compute)} for n in names}
    missed = Counter(rows[oracle][i].get("error_type") or "unknown" for i in ids if not rows[oracle][i]["correct"])
    return {"oracle": oracle, "greedy_from": greedy_from, "runs": {n: [str(d) for d in runs[n]] for n in names},
            "strategy": next(iter(rows[oracle].values()))["strategy"], "cases": len(ids),
            "categories": per_cat, "non_live_ast": non_live, "non_live_categories": nl,
            "paired_vs_greedy": tests, "cost_vs_greedy": costs, "ceiling_failures": dict(missed)}


def ratio_text(x: float | None) -> str:
    """A cost ratio as a table shows it; n/a where the reference cost nothing."""
    return "n/a" if x is None else f"{x:.2f}x"


def _cell(b: dict) -> str:
    lo, hi = b["ci95"]
    return f"{b['correct']}/{b['n']} = {100 * b['accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def markdown(s: dict) -> str:
    oracle = s["oracle"]
    scorers = [n for n in s["runs"] if n != oracle]
    head = ["category", GREEDY] + [f"{s['strategy']}, {n}" for n in scorers] + \
        [f"{s['strategy']}, {oracle} [ceiling]", "missed by the candidates"] + \
        [f"left for {n}" for n in scorers]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]

    def tail(get) -> list[str]:
        ceil = get(oracle)
        return [f"{100 * (1 - ceil):.1f}"] + [f"{100 * (ceil - get(n)):.1f}" for n in scorers]

    for c, b in s["categories"].items():
        lines.append("| " + " | ".join([c, _cell(b[GREEDY])] + [_cell(b[n]) for n in scorers] +
                                       [_cell(b[oracle])] + tail(lambda n: b[n]["accuracy"])) + " |")
    if s["non_live_ast"]:
        nl = s["non_live_ast"]
        lines.append("| " + " | ".join([f"non-live AST ({len(s['non_live_categories'])} cat.)",
                                        f"{100 * nl[GREEDY]:.1f}"] + [f"{100 * nl[n]:.1f}" for n in scorers] +
                                       [f"{100 * nl[oracle]:.1f}"] + tail(lambda n: nl[n])) + " |")
    out = [f"{s['cases']} cases, the same for every column. The {oracle} column reads the ground truth: "
           "a ceiling of what a perfect scorer could pick from the candidates, not a result.", "",
           *lines, ""]
    for n in scorers + [oracle]:
        t, cost = s["paired_vs_greedy"][n], s["cost_vs_greedy"][n]
        gap = ""
        if n != oracle and s["non_live_ast"]:
            nl = s["non_live_ast"]
            whole = nl[oracle] - nl[GREEDY]
            if whole > 0:
                gap = f"; it takes {100 * (nl[n] - nl[GREEDY]) / whole:.0f}% of the non-live AST gap from greedy to the ceiling"
        out.append(f"- {s['strategy']}, {n}: right where greedy is wrong {t['only_a']}, wrong where greedy "
                   f"is right {t['only_b']} (McNemar exact p = {t['p']:.3g}); wall time "
                   f"{ratio_text(cost['seconds_ratio'])} greedy's, compute {ratio_text(cost['compute_ratio'])}{gap}.")
    fails = ", ".join(f"{k} {v}" for k, v in sorted(s["ceiling_failures"].items(), key=lambda kv: -kv[1]))
    out += ["", "Right answer not among the candidates (the ceiling's failures, by what BFCL's checker "
            f"found): {fails or 'none'}."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench ceiling", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=DIR[,DIR...]",
                   help="harness output folders of one run; exactly one run made with --scorer oracle")
    p.add_argument("--out", required=True, help=f"folder for {SUMMARY} and {TABLE}")
    p.add_argument("--readme", default=None, help="also put the table into this file's results block")
    p.add_argument("--tag", default="ceiling-results", help="the block's marker name")
    a = p.parse_args(argv)
    s = summarize(_runs(a.runs))
    write_results(s, markdown(s), a, SUMMARY, TABLE, "toolprm bench ceiling", argv)
    return 0


def write_results(summary: dict, table: str, a, summary_file: str, table_file: str, prog: str,
                  argv: list[str] | None) -> None:
    """Write a summary (JSON) and its table (markdown) into ``a.out``, the table also
    into ``a.readme``'s block ``a.tag`` with the command that made it; print the table."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / summary_file).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / table_file).write_text(table + "\n", encoding="utf-8")
    if a.readme:
        cmd = prog + " " + " ".join(argv if argv is not None else sys.argv[1:])
        replace_block(a.readme, a.tag, f"Written by `{cmd}`.\n\n{table}")
    print(table)
