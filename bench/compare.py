"""Two runs of one strategy on the same cases, side by side.

``toolprm bench compare A=DIR[,DIR...] B=DIR[,DIR...] [--strategy greedy]`` reads
harness runs (``toolprm bench bfcl``, a folder or its shard folders) that differ in
one setting (the dtype, say) and reports, on the cases both scored: each run's
accuracy per category with its 95% Wilson interval, the share of identical
outputs, McNemar's exact test of B against A, and B's wall time per case as a
ratio to A's (meaningful only when both ran on one machine under the same load),
with each folder's machines and setups from its invocation log. Outputs can differ
between CPUs at the same settings (int4 most), so runs made on different machines
differ by that too.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from toolprm.bfcl import CATEGORIES, LANGUAGE_CATEGORIES, OTHER_CATEGORIES
from toolprm.errors import ToolprmError
from toolprm.train.stats import paired, wilson

from .report import _read_config, load_records, replace_block, runs_note
from .scaling import failure_kind


#: The order of a comparison's category rows (any other category follows, by name).
ORDER = CATEGORIES + LANGUAGE_CATEGORIES + OTHER_CATEGORIES


def _load(spec: str, strategy: str) -> tuple[str, dict[str, dict], dict, list[Path]]:
    name, sep, dirs = spec.partition("=")
    if not sep or not name or not dirs:
        raise ToolprmError(f"a run is NAME=DIR[,DIR...], got {spec!r}")
    recs: dict[str, dict] = {}
    folders = [Path(x) for x in dirs.split(",") if x]
    for d in folders:
        found = [f for f in [d, *sorted(d.glob("shard-*"))] if (f / "cases.jsonl").exists()]
        if not found:
            raise ToolprmError(f"run {name!r}: {d} holds no cases.jsonl (made by `toolprm bench bfcl`)")
        recs.update({r["id"]: r for r in load_records(d) if r["strategy"] == strategy})
    return name, recs, _read_config(found[0]), folders


def summarize(a_spec: str, b_spec: str, strategy: str = "greedy") -> dict:
    (an, a, ac, ad), (bn, b, bc, bd) = _load(a_spec, strategy), _load(b_spec, strategy)
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ToolprmError(f"{an} and {bn} share no case scored with {strategy!r}")

    def acc(rs: list[dict]) -> dict:
        k = sum(bool(r["correct"]) for r in rs)
        lo, hi = wilson(k, len(rs))
        wrong_count = sum(not r["correct"] and failure_kind(r.get("error_type") or "") == "wrong number of calls"
                          for r in rs)
        return {"correct": k, "n": len(rs), "accuracy": k / len(rs), "ci95": [lo, hi], "wrong_count": wrong_count}

    rows = {}
    present = {a[i]["category"] for i in ids}
    for cat in [c for c in ORDER if c in present] + sorted(present - set(ORDER)) + ["all"]:
        sel = [i for i in ids if cat == "all" or a[i]["category"] == cat]
        rows[cat] = {an: acc([a[i] for i in sel]), bn: acc([b[i] for i in sel]),
                     "identical": sum(a[i]["text"] == b[i]["text"] for i in sel) / len(sel),
                     "paired": paired([bool(b[i]["correct"]) for i in sel], [bool(a[i]["correct"]) for i in sel])}
    secs = sum(float(a[i]["stats"].get("seconds") or 0) for i in ids)
    ratio = sum(float(b[i]["stats"].get("seconds") or 0) for i in ids) / secs if secs else None
    return {"a": an, "b": bn, "strategy": strategy, "cases": len(ids), "categories": rows,
            "seconds_ratio": ratio, "configs": {an: ac, bn: bc}, "runs": runs_note(ad + bd)}


def markdown(s: dict) -> str:
    a, b = s["a"], s["b"]

    def cell(x: dict) -> str:
        lo, hi = x["ci95"]
        return f"{x['correct']}/{x['n']} = {100 * x['accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"

    lines = [f"| category | {a} | {b} | identical outputs | only {b} right / only {a} right (McNemar p) "
             f"| wrong number of calls, {a} / {b} |",
             "|---|---:|---:|---:|---:|---:|"]
    for cat, r in s["categories"].items():
        p = r["paired"]
        lines.append(f"| {cat} | {cell(r[a])} | {cell(r[b])} | {100 * r['identical']:.1f}% | "
                     f"{p['only_a']} / {p['only_b']} ({p['p']:.3g}) | {r[a]['wrong_count']} / {r[b]['wrong_count']} |")
    allr = s["categories"]["all"]
    delta = 100 * (allr[b]["accuracy"] - allr[a]["accuracy"])
    lines.append("")
    lines.append(f"{s['strategy']} on {s['cases']} cases both runs scored: {b} minus {a} = {delta:+.1f} "
                 f"points overall" + (f"; {b}'s wall time per case {s['seconds_ratio']:.2f}x {a}'s"
                                      if s["seconds_ratio"] else "") + ".")
    return "\n".join(lines) + "\n\n" + s["runs"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="NAME=DIR[,DIR...]: the reference run")
    p.add_argument("b", help="NAME=DIR[,DIR...]: the run compared with it")
    p.add_argument("--strategy", default="greedy")
    p.add_argument("--out", default=None, help="write the summary as JSON and markdown into this folder")
    p.add_argument("--readme", default=None)
    p.add_argument("--tag", default="compare-results", help="README block to write")
    a = p.parse_args(argv)
    s = summarize(a.a, a.b, a.strategy)
    cmd = "toolprm bench compare " + shlex.join(sys.argv[2:] if argv is None else argv)
    block = f"Written by `{cmd}`.\n\n{markdown(s)}"
    print(block)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(s, indent=2) + "\n")
        (out / "compare.md").write_text(block + "\n")
    if a.readme:
        replace_block(Path(a.readme), a.tag, block)
    return 0
