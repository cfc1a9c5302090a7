"""BFCL results: ``cases.jsonl`` → summary, markdown table and plots.

``toolprm bench report DIR [DIR ...]`` merges the runs of one or more harness
output folders into one table and one pair of plots. The harness uses the same
functions for its own folder.

Merging: a strategy label found in several folders is merged into one row when
the folders' run settings agree and they scored different cases (e.g. one
folder per category); otherwise each folder's row keeps its own label,
suffixed with ``@<folder>``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from toolprm.bfcl import CATEGORIES, LANGUAGE_CATEGORIES, TEST_CATEGORIES, non_live_summary
from toolprm.bfcl.summary import NON_LIVE, ast_summary_weights
from toolprm.engine.explore import Exploration
from toolprm.engine.search import DEFAULT_AGGREGATION
from toolprm.errors import ToolprmError
from toolprm.train.readme import replace_block
from toolprm.train.stats import mean_of_groups_ci, paired, wilson

__all__ = ["CASES_FILE", "SUMMARY_FILE", "RUN_FILE", "NON_LIVE_AST", "load_records", "summarize",
           "cost_table", "tables", "paired_by_category", "plot", "write_outputs", "main"]

CASES_FILE = "cases.jsonl"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"
INVOCATIONS_FILE = "invocations.jsonl"  # written by bench.harness.log_invocation
PLOT_CATEGORIES = "accuracy_by_category.png"
PLOT_COMPUTE = "accuracy_vs_compute.png"
#: BFCL's non-live AST summary: the unweighted mean of these four categories' accuracies.
NON_LIVE_AST: tuple[str, ...] = ("simple_python", "multiple", "parallel", "parallel_multiple")
#: The peer other strategies' wall time is compared with, when present.
REFERENCE = "outlines"


# --------------------------------------------------------------------------- records


def load_records(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a ``cases.jsonl``, in file order; of a folder, those of
    ``DIR/cases.jsonl`` (written by ``--jobs 1``) and then of each ``DIR/shard-K``
    (written by ``--jobs J``): one run, whichever way each invocation ran it.

    A line that is not a complete JSON record (a run killed mid-write) is skipped;
    with ``repair`` the file is rewritten without it, so appending can go on.
    A later record for the same (id, strategy) replaces an earlier one."""
    path = Path(path)
    if path.is_dir():
        records = {}
        for f in [path / CASES_FILE, *sorted(path.glob(f"shard-*/{CASES_FILE}"))]:
            records.update({(r["id"], r["strategy"]): r for r in load_records(f, repair=repair)})
        return list(records.values())
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    good: list[str] = []
    records: dict[tuple[str, str], dict] = {}
    damaged = False
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            damaged = True
            continue
        if not isinstance(rec, dict) or "id" not in rec or "strategy" not in rec:
            damaged = True
            continue
        good.append(line)
        records[(rec["id"], rec["strategy"])] = rec
    if text and not text.endswith("\n"):
        damaged = True
    if repair and damaged:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(g + "\n" for g in good), encoding="utf-8")
        os.replace(tmp, path)
    return list(records.values())


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _stat(rec: dict, key: str) -> float:
    value = rec.get(key)
    if value is None:
        value = (rec.get("stats") or {}).get(key, 0)
    return float(value or 0)


def _ordered(items: Iterable[str], order: Iterable[str]) -> list[str]:
    items = list(dict.fromkeys(items))
    order = [o for o in order if o in items]
    return order + [i for i in items if i not in order]


# --------------------------------------------------------------------------- summary


def summarize(records: list[dict], strategies: list[str] | None = None,
              config: dict | None = None) -> dict[str, Any]:
    """Per strategy × category: n, correct, accuracy, valid rate, mean generated /
    forced tokens, forward passes, seconds; BFCL's non-live AST summary per
    strategy; wall-time ratios against the outlines peer on the cases both scored."""
    labels = _ordered((r["strategy"] for r in records), strategies or [])
    cats = _ordered((r["category"] for r in records), CATEGORIES)
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        by[(r["strategy"], r["category"])].append(r)

    def block(rs: list[dict]) -> dict[str, Any]:
        n = len(rs)
        correct = sum(bool(r["correct"]) for r in rs)
        return {
            "n": n,
            "correct": correct,
            "accuracy": correct / n if n else None,
            "valid_rate": sum(bool(r["valid"]) for r in rs) / n if n else None,
            "mean_generated_tokens": _mean(_stat(r, "generated_tokens") for r in rs),
            "mean_forced_tokens": _mean(_stat(r, "forced_tokens") for r in rs),
            "mean_forward_passes": _mean(_stat(r, "forward_passes") for r in rs),
            "mean_scorer_calls": _mean(_stat(r, "scorer_calls") for r in rs),
            "mean_scorer_seconds": _mean(_stat(r, "scorer_seconds") for r in rs),
            "mean_seconds": _mean(_stat(r, "seconds") for r in rs),
            "total_seconds": sum(_stat(r, "seconds") for r in rs),
            "exceptions": sum(1 for r in rs if r.get("exception")),
            "error_types": dict(Counter(r.get("error_type") or "" for r in rs if not r["correct"])),
        }

    results: dict[str, dict[str, Any]] = {}
    overall: dict[str, Any] = {}
    non_live: dict[str, Any] = {}
    for label in labels:
        results[label] = {c: block(by[(label, c)]) for c in cats if by.get((label, c))}
        overall[label] = block([r for r in records if r["strategy"] == label])
        present = [c for c in NON_LIVE_AST if c in results[label]]
        non_live[label] = {
            "accuracy": _mean(results[label][c]["accuracy"] for c in present),
            "categories": present,
            "complete": len(present) == len(NON_LIVE_AST),
        }

    # Wall time and compute against the outlines peer of the same run (else greedy;
    # merged reports tag each record with its run), on the cases both scored.
    reference = REFERENCE if any(r["strategy"].split("@")[0] == REFERENCE for r in records) else "greedy"
    ref = {(r.get("run"), r["id"]): r for r in records if r["strategy"].split("@")[0] == reference}
    ratios: dict[str, Any] = {}
    if ref:
        for label in labels:
            paired = [(ref[(r.get("run"), r["id"])], r) for r in records
                      if r["strategy"] == label and (r.get("run"), r["id"]) in ref]
            ref_s = sum(_stat(a, "seconds") for a, _ in paired)
            ref_c = sum(compute(a) for a, _ in paired)
            ratios[label] = {
                "reference": reference,
                "n_paired": len(paired),
                "seconds_ratio": sum(_stat(b, "seconds") for _, b in paired) / ref_s if ref_s > 0 else None,
                "compute_ratio": sum(compute(b) for _, b in paired) / ref_c if ref_c > 0 else None,
            }
    return {
        "config": config or {},
        "strategies": labels,
        "categories": cats,
        "results": results,
        "overall": overall,
        "non_live_ast": non_live,
        "time_vs_reference": ratios,
    }


def compute(record: dict) -> float:
    """A case's compute: tokens generated, forced and chosen (enumerated alternatives,
    proposals), plus scorer calls."""
    st = record.get("stats") or {}
    return sum(float(st.get(k) or record.get(k) or 0)
               for k in ("generated_tokens", "forced_tokens", "chosen_tokens", "scorer_calls"))


# --------------------------------------------------------------------------- table


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def cost_table(summary: dict) -> str:
    """What each strategy costs per case: the valid rate, tokens generated and forced,
    forward passes and seconds, and wall time and compute as ratios to the reference
    (the outlines peer of the same run, else greedy) on the cases both scored. Its
    accuracies are in :func:`interval_table`, each with its interval."""
    labels = summary["strategies"]
    ratios = summary.get("time_vs_reference") or {}
    reference = next(iter(ratios.values()), {}).get("reference", REFERENCE)
    head = ["strategy", "valid %", "gen tok/case", "forced tok/case", "fwd/case", "s/case"]
    if ratios:
        head += [f"time ÷ {reference}", f"compute ÷ {reference}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for label in labels:
        o = summary["overall"][label]
        row = [label, _pct(o["valid_rate"]), _num(o["mean_generated_tokens"]), _num(o["mean_forced_tokens"]),
               _num(o["mean_forward_passes"]), _num(o["mean_seconds"], 2)]
        if ratios:
            r = ratios.get(label, {})
            row.append(_num(r.get("seconds_ratio"), 2) + (f" (n={r['n_paired']})" if r.get("n_paired") else ""))
            row.append(_num(r.get("compute_ratio"), 2))
        if o["exceptions"]:
            row[0] += f" ⚠{o['exceptions']} exc."
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def tables(summary: dict, records: list[dict]) -> str:
    """What ``bench bfcl`` and ``bench report`` print: every accuracy with its interval,
    each strategy against greedy (else the first) category by category with McNemar's
    exact test, then the cost per case."""
    labels = summary["strategies"]
    if not records:
        return "(no cases scored)"
    oracle = (summary.get("config") or {}).get("scorer") == "oracle"
    text = interval_table(summary, labels, records)
    if oracle:
        ranking = [label for label in labels if label.split("(")[0] in RANKING]
        rows = f" (the rows of {', '.join(ranking)})" if ranking else ""
        text = ("Scorer: the oracle, which reads the ground truth — a ceiling of what a perfect reward "
                f"model could pick from these candidates, not a result{rows}.\n\n" + text)
    paired_text = paired_by_category(records, labels)
    return text + ("\n\n" + paired_text if paired_text else "") + "\n\n" + cost_table(summary)


#: The strategies whose choice depends on the scorer.
RANKING = ("best_of_n", "coarse_beam", "fine_beam")


# --------------------------------------------------------------------------- plots


def plot(summary: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Two PNGs: accuracy per category per strategy (grouped bars, plus BFCL's
    non-live AST mean), and accuracy against compute per case (generated tokens;
    forward passes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = summary["strategies"]
    cats = list(summary["categories"])
    k = sum(c in NON_LIVE_AST for c in cats)
    groups = cats + (["non-live AST"] if k else [])
    names = cats + ([f"non-live AST\n({k}/{len(NON_LIVE_AST)} cat.)" if k < len(NON_LIVE_AST)
                     else "non-live AST"] if k else [])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = []

    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) * max(1, len(labels)) ** 0.5 + 2), 4.2))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        ys = []
        for g in groups:
            if g == "non-live AST":
                acc = summary["non_live_ast"][label]["accuracy"]
            else:
                b = summary["results"][label].get(g)
                acc = None if b is None else b["accuracy"]
            ys.append(float("nan") if acc is None else 100 * acc)
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(groups))]
        bars = ax.bar(xs, ys, width, label=label, color=colors[i % len(colors)])
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), names, rotation=20 if len(groups) > 3 else 0, ha="right"
                  if len(groups) > 3 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("BFCL accuracy by category")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = out_dir / PLOT_CATEGORIES
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    markers = "osD^v<>ph*"
    for ax, key, xlabel in ((axes[0], "mean_generated_tokens", "generated tokens per case"),
                            (axes[1], "mean_forward_passes", "forward passes per case")):
        for i, label in enumerate(labels):
            color = colors[i % len(colors)]
            o = summary["overall"][label]
            if o[key] is not None and o["accuracy"] is not None:
                ax.scatter([o[key]], [100 * o["accuracy"]], s=90, color=color, label=label,
                           edgecolor="black", zorder=3)
            for j, c in enumerate(cats):
                b = summary["results"][label].get(c)
                if b and b[key] is not None and len(cats) > 1:
                    ax.scatter([b[key]], [100 * b["accuracy"]], s=25, color=color, alpha=0.5,
                               marker=markers[j % len(markers)], zorder=2)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if len(cats) > 1:  # small markers: per category
        for j, c in enumerate(cats):
            axes[1].scatter([], [], s=25, color="gray", marker=markers[j % len(markers)], label=c)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(-3, 103)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("BFCL accuracy against compute (large: all cases; small: per category)")
    fig.tight_layout()
    path = out_dir / PLOT_COMPUTE
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)
    return paths


def write_outputs(records: list[dict], out_dir: str | os.PathLike, *, strategies: list[str] | None = None,
                  config: dict | None = None, plots: bool = True) -> tuple[dict, str]:
    """summary.json and the plots into ``out_dir``; returns (summary, its tables)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(records, strategies, config)
    tmp = out_dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / SUMMARY_FILE)
    if plots and records:
        plot(summary, out_dir)
    return summary, tables(summary, records)


@dataclass(frozen=True)
class RunConfig:
    """Settings every record of one output folder shares."""
    model: str = "smollm2"
    calls: str = "any"
    max_new_tokens: int = 256
    temperature: float = 0.8
    seed: int = 0
    aggregation: str = DEFAULT_AGGREGATION
    scorer: str = "default"  # engine.generate's scorer: default (None), a name of engine.api.SCORERS, or "oracle" (a ceiling)
    top_k: int = Exploration.top_k  # structured exploration's bounds (engine.explore)
    proposals: int = Exploration.proposals
    distinct_values: bool = False  # engine.explore's rule; runs before the option had none
    close_values: bool = False     # engine.explore's closed values; runs before the option had none
    distinct_calls: bool = False   # engine.explore's rule for repeated calls; runs before the option had none
    dtype: str = "float32"   # the policy's weights (engine.lean); runs before the option were float32
    prm: str = "shipped"     # the head's checkpoint folder the prm and hybrid scorers read
    ends: str = "auto"       # who reads the end decision for the prm and hybrid scorers (reward.prm.ENDS_READERS)
    keys: str = "auto"       # who reads a key step for the prm and hybrid scorers (reward.prm.KEYS_READERS)



# --------------------------------------------------------------------------- merging runs


def _read_config(d: Path) -> dict:
    """A folder's run settings, with defaults for settings added since it was made."""
    try:
        config = json.loads((d / RUN_FILE).read_text(encoding="utf-8")).get("config", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {**asdict(RunConfig()), **config} if config else {}


def merge_runs(dirs: list[Path]) -> tuple[list[dict], list[str]]:
    """All records of several harness folders, relabelled where rows must stay apart."""
    per_dir = {d: load_records(d) for d in dirs}
    configs = {d: _read_config(d) for d in dirs}
    names = {d: d.name or str(d) for d in dirs}
    if len(set(names.values())) < len(dirs):
        names = {d: str(d) for d in dirs}
    where: dict[str, list[Path]] = defaultdict(list)
    for d in dirs:
        for label in dict.fromkeys(r["strategy"] for r in per_dir[d]):
            where[label].append(d)
    keep_apart = set()
    for label, ds in where.items():
        if len(ds) < 2:
            continue
        ids = [{r["id"] for r in per_dir[d] if r["strategy"] == label} for d in ds]
        disjoint = sum(len(s) for s in ids) == len(set().union(*ids))
        same_config = all(configs[d] == configs[ds[0]] for d in ds)
        if not (disjoint and same_config):
            keep_apart.add(label)
    records, order = [], []
    for d in dirs:
        for r in per_dir[d]:
            r = dict(r, run=names[d])
            if r["strategy"] in keep_apart:
                r["strategy"] = f"{r['strategy']}@{names[d]}"
            records.append(r)
            order.append(r["strategy"])
    return records, list(dict.fromkeys(order))


def compute_per_case(block: dict) -> float:
    """The compute measure of the plots: generated tokens plus scorer calls per case."""
    return (block["mean_generated_tokens"] or 0) + (block["mean_scorer_calls"] or 0)


def scaling_table(summary: dict, specs: list[Any], cases_per_cat: dict[str, int],
                  records: list[dict], ref: str) -> str:
    """Accuracy per category with its 95% Wilson interval, the non-live AST mean with a
    stratified bootstrap interval, cost, and each strategy paired with ``ref`` (the
    matched-budget fine_beam) on the same cases by McNemar's exact test."""
    ran = [c for c in TEST_CATEGORIES + LANGUAGE_CATEGORIES + tuple(summary["categories"])
           if any(c in summary["results"].get(s.label, {}) for s in specs)]
    cats = list(dict.fromkeys(ran))  # the test categories first, then any other that ran
    weights = ast_summary_weights()
    by = _by_case(records)
    ast_cats = set(NON_LIVE_AST) & set(cats)
    scope = "on the non-live AST cases" if ast_cats else "on every case"
    head = ("| " + " | ".join(["strategy", *cats]) + f" | non-live AST, Python only [95% CI] | BFCL Non-Live AST "
            f"[95% CI] | {ref} against it {scope}: right only there / only here, p | compute / case | "
            "s / case | scorer share of time |")
    lines = [head, "|" + "---|" * (len(cats) + 7)]
    missing: set[str] = set()
    spent = {}  # label -> [scorer seconds, wall seconds]: what scoring costs inside the search
    for r in records:
        t = spent.setdefault(r["strategy"], [0.0, 0.0])
        t[0] += float((r.get("stats") or {}).get("scorer_seconds") or 0)
        t[1] += float(r.get("seconds") or 0)
    for s in specs:
        res = summary["results"].get(s.label)
        if not res:
            continue
        cells = []
        for c in cats:
            b = res.get(c)
            lo, hi = wilson(b["correct"], b["n"]) if b else (0, 0)
            cells.append(f"{_pct(b['accuracy'])} ({b['correct']}/{b['n']}) [{100 * lo:.0f}, {100 * hi:.0f}]"
                         if b else "—")
        ov = summary["overall"][s.label]
        ast = summary["non_live_ast"][s.label]
        mine = by.get(s.label, {})
        groups = [[ok for cat, ok in mine.values() if cat == c] for c in ast["categories"]]
        lo, hi = mean_of_groups_ci(groups)
        nl = f"{_pct(ast['accuracy'])} [{100 * lo:.1f}, {100 * hi:.1f}]" if ast["categories"] else "—"
        if 0 < len(ast["categories"]) < len(NON_LIVE_AST):
            nl += f" ({len(ast['categories'])}/{len(NON_LIVE_AST)} cat.)"
        official = non_live_summary({c: (b["correct"], b["n"]) for c, b in res.items() if c in NON_LIVE})
        if official.non_live_ast is None:
            missing.update(c for c in official.missing if c != "irrelevance")
            bfcl = "N/A"
        else:
            members = list(weights)
            lo, hi = mean_of_groups_ci([[ok for cat, ok in mine.values() if cat == c] for c in members],
                                       weights=[weights[c] for c in members])
            bfcl = f"{_pct(official.non_live_ast)} [{100 * lo:.1f}, {100 * hi:.1f}]"
        theirs = by.get(ref, {})
        common = sorted(i for i in set(mine) & set(theirs) if not ast_cats or mine[i][0] in ast_cats)
        if s.label == ref or not common:
            vs = "—"
        else:
            t = paired([theirs[i][1] for i in common], [mine[i][1] for i in common])
            vs = f"{t['only_a']} / {t['only_b']}, p = {t['p']:.3g}"
        sc, wall = spent.get(s.label, (0.0, 0.0))
        share = f"{100 * sc / wall:.1f}%" if sc and wall else "—"
        lines.append(f"| {s.label} | " + " | ".join(cells) + f" | {nl} | {bfcl} | {vs} | "
                     f"{compute_per_case(ov):.0f} | {ov['mean_seconds']:.1f} | {share} |")
    sizes = ", ".join(f"{c}: {n}" for c, n in cases_per_cat.items())
    return "\n".join(lines) + (f"\n\nCases per category: {sizes}, {_sameness(by, [s.label for s in specs if summary['results'].get(s.label)], cats)}. Accuracy "
                               "in %, scored by BFCL's AST checker, with 95% Wilson intervals; non-live "
                               "AST is the unweighted mean of simple_python, multiple, parallel and "
                               "parallel_multiple (over the categories run), its interval a bootstrap "
                               "over cases within each category. BFCL Non-Live AST is BFCL's own summary "
                               "(bfcl.summary: the mean of Simple AST, itself the mean of simple_python, "
                               "simple_java and simple_javascript, and multiple, parallel and "
                               "parallel_multiple), which leaderboard rows quote; N/A where a category of it"
                               f" was not run{' (here: ' + ', '.join(sorted(missing)) + ')' if missing else ''}"
                               ". The paired column counts, over the "
                               f"cases of those categories (of every category where none ran), where "
                               f"{ref} is right and this strategy wrong, the reverse, and McNemar's exact p. Compute per case = generated tokens + "
                               "scorer calls; the scorer's share is the time spent in it over the "
                               "strategy's wall time, in the same run.")


def _sameness(by: dict[str, dict[str, tuple[str, bool]]], labels: list[str], cats: list[str]) -> str:
    """Whether every strategy of the table (``labels``; ``by``: label -> case id ->
    (category, correct)) ran the same cases in each category: a run still under way
    has fewer, and its means are then over other cases than the rest's."""
    def ids(label: str, cat: str) -> frozenset:
        return frozenset(i for i, (c, _) in by.get(label, {}).items() if c == cat)
    uneven = [c for c in cats if len({ids(label, c) for label in labels}) > 1]
    if not uneven:
        return "the same for every strategy"
    return (f"but not the same cases for every strategy in {', '.join(uneven)} (each cell gives its own "
            "count; a run not finished has fewer), so the means there are over different cases: compare "
            "strategies by the paired column, which counts only the cases both ran")


def interval_table(summary: dict, labels: list[str], records: list[dict]) -> str:
    """The table of ``bench scaling`` for these runs: every accuracy with its 95%
    interval, and each strategy against greedy (else the first) on the same cases by
    McNemar's exact test."""
    ref = _reference(labels)
    sizes = {c: max(b["n"] for label in labels if (b := summary["results"][label].get(c)))
             for c in summary["categories"]}
    return scaling_table(summary, [SimpleNamespace(label=label) for label in labels], sizes, records, ref)


def paired_by_category(records: list[dict], labels: list[str]) -> str:
    """Each strategy against greedy (else the first) category by category, on the cases
    both ran: where greedy alone is right, where this strategy alone is, and McNemar's
    exact p. A lead or a loss in one category rests on this, not on two intervals."""
    if len(labels) < 2:
        return ""
    ref = _reference(labels)
    by = _by_case(records)
    cats = _ordered((r["category"] for r in records), TEST_CATEGORIES + LANGUAGE_CATEGORIES)
    theirs = by.get(ref, {})
    lines = [f"{ref} against each strategy, category by category, on the cases both ran: right only with "
             f"{ref} / right only with it, McNemar's exact p.", "",
             "| strategy | " + " | ".join([*cats, "every case"]) + " |", "|---" * (len(cats) + 2) + "|"]
    for label in labels:
        if label == ref:
            continue
        mine = by.get(label, {})
        cells = []
        for cat in (*cats, None):
            common = [i for i in mine if i in theirs and (cat is None or mine[i][0] == cat)]
            if not common:
                cells.append("—")
                continue
            t = paired([theirs[i][1] for i in common], [mine[i][1] for i in common])
            cells.append(f"{t['only_a']} / {t['only_b']} (p = {t['p']:.2g})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _by_case(records: list[dict]) -> dict[str, dict[str, tuple[str, bool]]]:
    """label -> case id -> (category, correct): what the paired tests read."""
    by: dict[str, dict[str, tuple[str, bool]]] = {}
    for r in records:
        by.setdefault(r["strategy"], {})[r["id"]] = (r["category"], bool(r["correct"]))
    return by


def _reference(labels: list[str]) -> str:
    """The row every other is paired with: greedy where it ran, else the first."""
    return next((label for label in labels if label.startswith("greedy")), labels[0])


def runs_note(dirs: list[Path]) -> str:
    """Where and how long each folder's runs ran, from its ``invocations.jsonl``: the
    machines, jobs × threads, dtype, and the wall time of the invocations that ended."""
    lines = []
    for d in dirs:
        path = next((p / INVOCATIONS_FILE for p in (d, d.parent) if (p / INVOCATIONS_FILE).exists()), None)
        if path is None:
            lines.append(f"- `{d}`: no invocation log (run before the harness kept one)")
            continue
        starts, ends = {}, {}
        for line in path.read_text(encoding="utf-8").splitlines():
            e = json.loads(line)
            (ends if e.get("ended") else starts)[e["started"]] = e
        machines = sorted({f"{m.get('cpu')} ({', '.join(m.get('bf16') or ['no bf16'])}), {m.get('cores')} cores"
                           for e in starts.values() if (m := e.get("machine"))})
        setups = sorted({f"{e.get('jobs')} job(s) × {e.get('threads')} thread(s), {e.get('dtype')}"
                         for e in starts.values()})
        seconds = sum(e.get("seconds", 0) for e in ends.values())
        open_ = len(starts) - len(ends)
        lines.append(f"- `{d}`: {len(starts)} invocation(s), {seconds:,.0f} s of wall time in those that ended"
                     + (f" ({open_} stopped before the end, not counted)" if open_ else "")
                     + f"; {'; '.join(machines)}; {'; '.join(setups)}")
    return "Runs (from each folder's invocation log):\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench report",
                                description="Merge BFCL harness runs into one table and plot.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="output folders of `toolprm bench bfcl`")
    p.add_argument("--out", default=None,
                   help="where summary.json and the plots go (default: DIR itself when one is given, "
                        "else ./bfcl-report)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--readme", default=None, help="also put the table into this file's results block")
    p.add_argument("--tag", default="bfcl-results", help="the block's marker name (default bfcl-results)")
    a = p.parse_args(argv)
    dirs = [Path(d) for d in a.dirs]
    for d in dirs:
        if not (d / CASES_FILE).exists() and not any(d.glob(f"shard-*/{CASES_FILE}")):
            raise ToolprmError(f"{d} has no {CASES_FILE}, nor shards that hold one: not a "
                               "`toolprm bench bfcl` output folder")
    records, order = merge_runs(dirs)
    out = Path(a.out) if a.out else (dirs[0] if len(dirs) == 1 else Path("bfcl-report"))
    configs = [_read_config(d) for d in dirs]
    config = configs[0] if len(dirs) == 1 else {"merged_from": [str(d) for d in dirs]}
    if len({c.get("scorer") for c in configs}) == 1:
        config["scorer"] = configs[0].get("scorer")
    summary, table = write_outputs(records, out, strategies=order, config=config, plots=not a.no_plots)
    table += "\n\n" + runs_note(dirs)
    print(table)
    if a.readme:
        cmd = "toolprm bench report " + " ".join(sys.argv[3:] if argv is None else argv)
        replace_block(a.readme, a.tag, f"Written by `{cmd}`.\n\n{table}")
    if not a.no_plots and records:
        print(f"\nplots: {out / PLOT_CATEGORIES}, {out / PLOT_COMPUTE}")
    return 0
