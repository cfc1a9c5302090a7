"""`toolprm bench scaling`: fine-grained beam search against every baseline.

On BFCL's non-live (test) categories, every strategy runs on the same cases, same
model and same prompt, through the BFCL harness (scored by BFCL's own checker):
unconstrained, outlines, greedy, and at a matched budget of M x N rows per case
majority(n=MN), best_of_n(n=MN), coarse_beam(M, N) and fine_beam(M, N); plus the
fine_beam grid M x N. Writes the harness's files (cases.jsonl, summary.json) and
scaling.md, accuracy_vs_compute_all.png and fine_beam_grid.png. ``--readme FILE``
replaces the results block of a README (between the results markers) with the
generated table, so no number in it is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from itertools import permutations
from pathlib import Path

from toolprm.bfcl import LANGUAGE_CATEGORIES, TEST_CATEGORIES, load_cases
from toolprm.engine.api import DEFAULT_SCORER
from toolprm.engine.explore import Exploration
from toolprm.engine.lean import DTYPES, resolve_dtype
from toolprm.engine.search import AGGREGATIONS
from toolprm.errors import ToolprmError
from toolprm.train.stats import paired

from . import report
from .harness import StrategySpec, log_invocation, run_sharded, threads_per_job
from .report import NON_LIVE_AST, RunConfig, compute_per_case, scaling_table

DEFAULT_MODEL = "smollm2"


def markers(model: str) -> tuple[str, str]:
    """The README markers of a model's results block (the default model's carry no name)."""
    tag = "scaling-results" if model == DEFAULT_MODEL else f"scaling-results:{model}"
    return f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ToolprmError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ToolprmError(f"expected positive integers, got {text!r}")
    return vals


BASELINES = ("unconstrained", "outlines", "greedy", "majority", "best_of_n", "coarse_beam")
#: Run only when --baselines names them: the other grammar engines' constrained greedy.
EXTRA_BASELINES = ("xgrammar", "llguidance")


def baselines_arg(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in BASELINES + EXTRA_BASELINES]
    if unknown:
        raise ToolprmError(f"unknown baseline {unknown[0]!r}; choose from "
                           f"{', '.join(BASELINES + EXTRA_BASELINES)}")
    return names


def specs_for(m: int, n: int, grid_m: list[int], grid_n: list[int],
              baselines: list[str] = BASELINES) -> list[StrategySpec]:
    """The baselines (at the matched budget of m x n rows), then the fine_beam grid."""
    budget = {"majority": StrategySpec("majority", m, m * n), "best_of_n": StrategySpec("best_of_n", m, m * n),
              "coarse_beam": StrategySpec("coarse_beam", m, n)}
    specs = [budget.get(b, StrategySpec(b)) for b in BASELINES + EXTRA_BASELINES if b in baselines]
    specs += [StrategySpec("fine_beam", gm, gn) for gm in grid_m for gn in grid_n]
    if StrategySpec("fine_beam", m, n) not in specs:
        specs.append(StrategySpec("fine_beam", m, n))
    return list(dict.fromkeys(specs))


# BFCL checker error types, grouped into what went wrong.
FAILURE_KINDS = (("no parseable output", ("ast_decoder",)),
                 ("call made on irrelevance", ("irrelevance_error",)),
                 ("wrong number of calls", ("wrong_count",)),
                 ("wrong function", ("wrong_func_name",)),
                 ("missing or extra parameter", ("missing_required", "missing_optional", "unexpected_param")),
                 ("wrong value or type", ("value_error", "type_error")))


def failure_kind(error_type: str) -> str:
    for kind, needles in FAILURE_KINDS:
        if any(n in error_type for n in needles):
            return kind
    return "other"


def failure_table(summary: dict, specs: list[StrategySpec]) -> str:
    """Failed cases per strategy, by what the BFCL checker found wrong."""
    kinds = [k for k, _ in FAILURE_KINDS] + ["other"]
    counts = {}
    for s in specs:
        ov = summary["overall"].get(s.label)
        if ov:
            c = dict.fromkeys(kinds, 0)
            for et, n in ov["error_types"].items():
                c[failure_kind(et)] += n
            counts[s.label] = c
    used = [k for k in kinds if any(c[k] for c in counts.values())]
    if not used:
        return "No case failed."
    lines = ["| strategy | failed | " + " | ".join(used) + " |", "|" + "---|" * (len(used) + 2)]
    for label, c in counts.items():
        lines.append(f"| {label} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in used) + " |")
    return "\n".join(lines)


def plots(summary: dict, specs: list[StrategySpec], grid_m: list[int], grid_n: list[int], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def point(label):
        acc = summary["non_live_ast"][label]["accuracy"]
        if acc is None:
            acc = summary["overall"][label]["accuracy"]
        return compute_per_case(summary["overall"][label]), 100 * acc

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = iter("osD^v<>p*hX")
    for s in specs:  # baselines: one marker each
        if s.name != "fine_beam" and s.label in summary["overall"]:
            x, y = point(s.label)
            ax.scatter([x], [y], label=s.label, s=40, marker=next(markers))
    for gn in sorted({s.n for s in specs if s.name == "fine_beam"}):  # fine_beam: a line per N, M marked
        row = [s for s in specs if s.name == "fine_beam" and s.n == gn and s.label in summary["overall"]]
        pts = sorted((point(s.label), s.m) for s in row)
        if pts:
            ax.plot([x for (x, _), _ in pts], [y for (_, y), _ in pts], "-o", ms=4, label=f"fine_beam N={gn}")
            for (x, y), m in pts:
                ax.annotate(f"M={m}", (x, y), textcoords="offset points", xytext=(3, 4), fontsize=6)
    ax.set_xscale("symlog")
    ax.set_xlabel("compute per case (generated tokens + scorer calls)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("BFCL non-live: accuracy against compute")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_compute_all.png", dpi=120)
    plt.close(fig)

    import numpy as np
    grid = np.full((len(grid_m), len(grid_n)), np.nan)
    for i, gm in enumerate(grid_m):
        for j, gn in enumerate(grid_n):
            lab = StrategySpec("fine_beam", gm, gn).label
            if lab in summary["non_live_ast"]:
                acc = summary["non_live_ast"][lab]["accuracy"]
                grid[i, j] = 100 * (acc if acc is not None else summary["overall"][lab]["accuracy"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(grid, cmap="viridis", origin="lower")
    ax.set_xticks(range(len(grid_n)), [str(v) for v in grid_n])
    ax.set_yticks(range(len(grid_m)), [str(v) for v in grid_m])
    ax.set_xlabel("N (beams kept)")
    ax.set_ylabel("M (samples per beam)")
    for i in range(len(grid_m)):
        for j in range(len(grid_n)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", color="w")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title("fine_beam accuracy, M x N")
    fig.tight_layout()
    fig.savefig(out / "fine_beam_grid.png", dpi=120)
    plt.close(fig)


def explore_more_retain_less(summary: dict, grid_m: list[int], grid_n: list[int],
                             records: list[dict]) -> str:
    """Does raising M help more than raising N here? The mean gains describe the grid;
    the verdict rests on paired tests. "Explore more, retain less" is a claim at a fixed
    budget, so each pair of grid cells with the same M x N (fine_beam(8,1) against
    fine_beam(4,2)) is compared on the same cases by McNemar's exact test, over the
    non-live AST cases (every case where none ran). It holds, or does not, only where
    every such pair leans the same way and the smallest p, times the number of pairs
    (Bonferroni), is below 0.05; otherwise it is "not shown at this size"."""
    def acc(m, n):
        lab = StrategySpec("fine_beam", m, n).label
        a = summary["non_live_ast"].get(lab, {}).get("accuracy")
        return a if a is not None else summary["overall"].get(lab, {}).get("accuracy")
    m_gain = [acc(grid_m[-1], n) - acc(grid_m[0], n) for n in grid_n
              if acc(grid_m[-1], n) is not None and acc(grid_m[0], n) is not None]
    n_gain = [acc(m, grid_n[-1]) - acc(m, grid_n[0]) for m in grid_m
              if acc(m, grid_n[-1]) is not None and acc(m, grid_n[0]) is not None]
    if len(grid_m) < 2 or len(grid_n) < 2 or not m_gain or not n_gain:
        return "The grid is incomplete; nothing is concluded about M against N."
    dm, dn = sum(m_gain) / len(m_gain), sum(n_gain) / len(n_gain)
    gains = (f"Raising M from {grid_m[0]} to {grid_m[-1]} changes accuracy by {100 * dm:+.1f} points on "
             f"average; raising N from {grid_n[0]} to {grid_n[-1]} by {100 * dn:+.1f}.")

    outcome = {}  # label -> case id -> correct, over the AST cases where any ran
    ast = [r for r in records if r["category"] in NON_LIVE_AST]
    for r in ast or records:
        outcome.setdefault(r["strategy"], {})[r["id"]] = bool(r["correct"])
    tests = []
    for (m1, n1), (m2, n2) in permutations([(m, n) for m in grid_m for n in grid_n], 2):
        if m1 <= m2 or m1 * n1 != m2 * n2:  # (m1, n1) must explore more at the same budget
            continue
        a = outcome.get(StrategySpec("fine_beam", m1, n1).label, {})
        b = outcome.get(StrategySpec("fine_beam", m2, n2).label, {})
        common = sorted(set(a) & set(b))
        if common:
            t = paired([b[i] for i in common], [a[i] for i in common])
            tests.append((f"fine_beam({m1},{n1}) against fine_beam({m2},{n2})", t, len(common)))
    if not tests:
        return gains + " No two cells of the grid share a budget, so nothing is concluded about M against N."
    said = "; ".join(f"{name}: right only with the first {t['only_b']}, only with the second "
                     f"{t['only_a']} of {k} cases, McNemar p = {t['p']:.3g}" for name, t, k in tests)
    p_min = min(1.0, min(t["p"] for _, t, _ in tests) * len(tests))
    if all(t["only_b"] > t["only_a"] for _, t, _ in tests) and p_min < 0.05:
        verdict = f'"explore more, retain less" holds on these cases (Bonferroni p = {p_min:.3g})'
    elif all(t["only_b"] < t["only_a"] for _, t, _ in tests) and p_min < 0.05:
        verdict = f'"explore more, retain less" does not hold on these cases (Bonferroni p = {p_min:.3g})'
    else:
        verdict = ('"explore more, retain less" is not shown at this size (at an equal budget, neither '
                   'more exploration nor more beams wins every comparison at Bonferroni p < 0.05)')
    return f"{gains} At an equal budget M x N: {said}. So {verdict}."


def update_readme(readme: Path, block: str, model: str = DEFAULT_MODEL, tag: str | None = None) -> None:
    """Replace the model's scaling block, or the block ``tag`` names."""
    report.replace_block(readme, tag or ("scaling-results" if model == DEFAULT_MODEL
                                         else f"scaling-results:{model}"), block)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/scaling")
    p.add_argument("--limit", type=int, default=10, help="cases per test category (default 10)")
    p.add_argument("--category", action="append", choices=TEST_CATEGORIES + LANGUAGE_CATEGORIES,
                   help="test categories (default: the five Python non-live ones; add simple_java and "
                        "simple_javascript for BFCL's own Non-Live AST summary)")
    p.add_argument("-m", type=int, default=8, help="M of the matched-budget comparison")
    p.add_argument("-n", type=int, default=2, help="N of the matched-budget comparison")
    p.add_argument("--grid-m", default="2,4,8,16")
    p.add_argument("--grid-n", default="1,2,4")
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help="comma-separated baselines to run beside fine_beam ('' for none; default: "
                        f"{','.join(BASELINES)}; also {', '.join(EXTRA_BASELINES)})")
    p.add_argument("--model", default=None)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--aggregation", default=RunConfig.aggregation, choices=AGGREGATIONS,
                   help="how the beams rank partial outputs (see toolprm generate --help); a "
                        "resumed folder must be run with the one it was made with")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=1, help="Ray workers (pip install 'toolprm[scale]'), "
                   "taking chunks of cases as they become free, their records in OUT/shard-K")
    p.add_argument("--address", default=None, help="the Ray cluster for the --jobs workers: 'auto' or "
                   "host:port (default: a local one)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="the policy's weights (see bench bfcl)")
    p.add_argument("--no-run", action="store_true",
                   help="run nothing: summarize the pairs the folder holds (a run stopped early)")
    p.add_argument("--readme", default=None, help="write the results block into this README")
    p.add_argument("--tag", default=None, help="the README block to write (default: scaling-results, "
                   "or scaling-results:MODEL for another model)")
    a = p.parse_args(argv)
    if a.limit < 1:
        raise ToolprmError("--limit must be a positive integer")
    if a.jobs < 1:
        raise ToolprmError("--jobs must be a positive integer")
    grid_m, grid_n = _ints(a.grid_m), _ints(a.grid_n)
    specs = specs_for(a.m, a.n, grid_m, grid_n, baselines_arg(a.baselines))
    cats = a.category or list(TEST_CATEGORIES)
    cases = [c for cat in cats for c in load_cases(cat, a.limit)]
    per_cat = {cat: sum(1 for c in cases if c.category == cat) for cat in cats}
    config = RunConfig(model=a.model or DEFAULT_MODEL, max_new_tokens=a.max_new_tokens,
                       aggregation=a.aggregation, dtype=resolve_dtype(a.dtype),
                       distinct_values=Exploration.distinct_values, distinct_calls=Exploration.distinct_calls)
    out = Path(a.out)
    cmd = "toolprm bench scaling " + shlex.join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    if a.no_run:
        wanted = {c.id for c in cases}, {sp.label for sp in specs}
        records = [r for r in report.load_records(out) if r["id"] in wanted[0] and r["strategy"] in wanted[1]]
        if not records:
            raise ToolprmError(f"{out} holds no record of these cases and strategies")
    else:
        started = log_invocation(out, {"command": cmd,
                                       "jobs": a.jobs, "threads": threads_per_job(a.jobs, a.threads),
                                       "dtype": config.dtype, "pairs": len(cases) * len(specs)})
        records = run_sharded(cases, specs, out, config, a.jobs, a.threads, address=a.address)
        log_invocation(out, {"ended": True, "seconds": round(time.perf_counter() - t0, 1)}, started)
    summary, _ = report.write_outputs(records, out, strategies=[s.label for s in specs],
                                      config=asdict(config))
    plots(summary, specs, grid_m, grid_n, out)
    table = scaling_table(summary, specs, per_cat, records, StrategySpec("fine_beam", a.m, a.n).label)
    verdict = explore_more_retain_less(summary, grid_m, grid_n, records)
    failures = failure_table(summary, specs)
    block = (f"Written by `{cmd.strip()}` (it runs whatever pairs the folder lacks) on model "
             f"`{config.model}` (scorer: the engine's default, {DEFAULT_SCORER}; aggregation "
             f"{config.aggregation}), "
             f"CPU.\n\n{table}\n\n{verdict}\n\nFailed cases by what BFCL's checker found wrong:\n\n"
             f"{failures}\n\nPlots: `{out}/accuracy_vs_compute_all.png`, "
             f"`{out}/fine_beam_grid.png`.\n\n{report.runs_note([out])}")
    (out / "scaling.md").write_text(block + "\n")
    (out / "scaling.json").write_text(json.dumps({"cases_per_category": per_cat, "verdict": verdict,
                                                  "specs": [s.label for s in specs]}, indent=2))
    print(block)
    print(f"\n({time.perf_counter() - t0:.0f} s this invocation)")
    if a.readme:
        update_readme(Path(a.readme), block, config.model, a.tag)
    return 0
