"""Choosing fine_beam's exploration bounds by measurement, on the live categories.

``toolprm bench bounds NAME=DIR[,DIR...] ...`` reads harness runs (``toolprm bench
bfcl --scorer oracle --strategy greedy --strategy fine_beam``) that differ only in
the bounds of structured exploration (``-m``, ``--top-k``, ``--proposals``). The
oracle scorer makes each run's accuracy the ceiling its candidates allow, so the
runs compare how often the right answer is proposed at all, against what the
proposing costs. Per run: the ceiling per category (95% Wilson interval), over all
cases, wall time and compute as ratios to the run's own greedy (the same machine
and load), and a paired test against the run with the highest ceiling.

The choice: the cheapest run (by wall-time ratio) whose ceiling is at most
``--within`` cases below the best and not significantly below it (McNemar's
exact test, p < 0.05). The test categories (BFCL's non-live ones) are refused:
defaults are never chosen on the test set.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from toolprm.bfcl import CATEGORIES
from toolprm.errors import ToolprmError
from toolprm.train.stats import paired, wilson

from .ceiling import GREEDY, _runs, ratio_text, write_results
from .report import _read_config, compute, load_records

SUMMARY = "bounds.json"
TABLE = "bounds.md"
SEARCH = "fine_beam"
BOUNDS = ("m", "n", "top_k", "proposals")


def _load(dirs: list[Path]) -> tuple[dict, dict[str, dict], dict[str, dict]]:
    """(the run's bounds, case id -> fine_beam's record, case id -> greedy's)."""
    configs = [_read_config(d) for d in dirs]
    if any(c.get("scorer") != "oracle" for c in configs):
        raise ToolprmError(f"{dirs[0]}: bounds are compared by their oracle ceiling; run "
                           "`toolprm bench bfcl` with --scorer oracle")
    searched: dict[str, dict] = {}
    greedy: dict[str, dict] = {}
    labels = set()
    for d in dirs:
        for r in load_records(d):
            if not r["category"].startswith("live_"):
                raise ToolprmError(f"{d}: case {r['id']} is from the test set ({r['category']}); "
                                   "bounds are chosen on the live categories only")
            if r["strategy"] == GREEDY:
                greedy[r["id"]] = r
            elif r["strategy"].split("(")[0] == SEARCH:
                labels.add(r["strategy"])
                searched[r["id"]] = r
    if len(labels) != 1:
        raise ToolprmError(f"{dirs[0]}: a run must hold exactly one {SEARCH} setting, found "
                           f"{sorted(labels) or 'none'}")
    label = labels.pop()
    widths = re.search(r"m=(\d+),n=(\d+)", label)
    if widths is None or "sampling" in label:
        raise ToolprmError(f"{dirs[0]}: {label} is not a structured-exploration fine_beam")
    bounds = {"m": int(widths[1]), "n": int(widths[2]), "top_k": configs[0].get("top_k"),
              "proposals": configs[0].get("proposals")}
    return bounds, searched, greedy


def summarize(runs: dict[str, list[Path]], within: int = 1) -> dict:
    loaded = {name: _load(dirs) for name, dirs in runs.items()}
    ids = set.intersection(*(set(s) & set(g) for _, s, g in loaded.values()))
    if not ids:
        raise ToolprmError("the runs share no case scored by both greedy and " + SEARCH)
    order = sorted(ids)
    cats = [c for c in CATEGORIES if any(loaded[next(iter(runs))][1][i]["category"] == c for i in ids)]

    def acc(recs: list[dict]) -> dict:
        k = sum(bool(r["correct"]) for r in recs)
        lo, hi = wilson(k, len(recs))
        return {"correct": k, "n": len(recs), "accuracy": k / len(recs), "ci95": [lo, hi]}

    out: dict[str, dict] = {}
    for name, (bounds, searched, greedy) in loaded.items():
        recs = [searched[i] for i in order]

        def ratio(f) -> float | None:
            ref = sum(f(greedy[i]) for i in order)
            return sum(f(searched[i]) for i in order) / ref if ref > 0 else None

        out[name] = {"bounds": bounds, "all": acc(recs),
                     "categories": {c: acc([r for r in recs if r["category"] == c]) for c in cats},
                     "greedy": acc([greedy[i] for i in order]),
                     "seconds_ratio": ratio(lambda r: float(r.get("seconds") or 0)),
                     "compute_ratio": ratio(compute)}
    best = max(out, key=lambda n: out[n]["all"]["correct"])
    right = {n: [bool(loaded[n][1][i]["correct"]) for i in order] for n in out}
    for n in out:
        out[n]["paired_vs_best"] = paired(right[n], right[best])
    fine = [n for n in out if out[n]["all"]["correct"] >= out[best]["all"]["correct"] - within
            and (n == best or out[n]["paired_vs_best"]["p"] >= 0.05)]
    chosen = min(fine, key=lambda n: out[n]["seconds_ratio"] or float("inf"))
    return {"cases": len(order), "categories": cats, "best": best, "within": within, "chosen": chosen,
            "runs": out, "folders": {n: [str(d) for d in runs[n]] for n in runs}}


def _cell(b: dict) -> str:
    lo, hi = b["ci95"]
    return f"{b['correct']}/{b['n']} = {100 * b['accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def markdown(s: dict) -> str:
    head = ["run", "m", "n", "top_k", "proposals", *s["categories"], "all [ceiling]", "greedy",
            "wall / greedy", "compute / greedy", "vs best (McNemar p)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, r in s["runs"].items():
        b, t = r["bounds"], r["paired_vs_best"]
        vs = "best" if name == s["best"] else f"+{t['only_a']} / -{t['only_b']} (p = {t['p']:.2g})"
        lines.append("| " + " | ".join(
            [name + (" **chosen**" if name == s["chosen"] else ""), *(str(b[k]) for k in BOUNDS),
             *(_cell(r["categories"][c]) for c in s["categories"]), _cell(r["all"]), _cell(r["greedy"]),
             ratio_text(r["seconds_ratio"]), ratio_text(r["compute_ratio"]), vs]) + " |")
    return "\n".join([
        f"{s['cases']} live cases, the same for every run, each searched by fine_beam with the oracle "
        "scorer (it reads the ground truth: a ceiling of what a perfect scorer could pick from the "
        "candidates, not a result). Chosen: the cheapest run by wall time whose ceiling is at most "
        f"{s['within']} case(s) below the best ({s['best']}) and not significantly below it.", "",
        *lines])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench bounds", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=DIR[,DIR...]",
                   help="oracle runs of fine_beam (with greedy) on the same live cases, one per bound setting")
    p.add_argument("--within", type=int, default=1, help="cases a cheaper run may lose to the best (default 1)")
    p.add_argument("--out", required=True, help=f"folder for {SUMMARY} and {TABLE}")
    p.add_argument("--readme", default=None, help="also put the table into this file's results block")
    p.add_argument("--tag", default="bounds-results", help="the block's marker name")
    a = p.parse_args(argv)
    if a.within < 0:
        raise ToolprmError("--within must be a non-negative number of cases")
    s = summarize(_runs(a.runs), a.within)
    write_results(s, markdown(s), a, SUMMARY, TABLE, "toolprm bench bounds", argv)
    return 0
