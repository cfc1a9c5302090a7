"""Sibling sets on held-out live queries, and how well each scorer ranks them.

A beam search only ever compares the candidates that extend one parent (its
siblings), so that is what a reward model must rank. ``toolprm train siblings``
walks fine_beam with one beam over live queries the shipped PRM never saw
(``rollout.sibling_sets``: the search's own candidate generator, forks and
prompt), labels every candidate with ``labels.step_labels`` and scores every set
with each scorer (the shipped PRM, the policy's own confidence). Per scorer:

* top-1 accuracy over the sets that hold a right and a wrong candidate (is the
  best-scored candidate a right one?), with a Wilson interval, per step kind;
* pairwise accuracy over the (right, wrong) pairs of those sets (ties count half);
* the PRM against the policy on the same sets (McNemar's exact test on top-1).

Each query's sets are appended to ``sets.jsonl`` as they are made (``--resume``
goes on); ``metrics.json`` and ``metrics.md`` are written from that file.
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from toolprm.bfcl import KNOWN_UNSATISFIABLE, Case, assert_not_test, held_out, load_cases
from toolprm.engine.explore import Exploration
from toolprm.engine.models import get_policy
from toolprm.engine.query import prepare
from toolprm.engine.search import PolicyScorer
from toolprm.errors import ToolprmError
from toolprm.reward.prm import default_scorer

from .data import DEFAULT_MIX, DataConfig, pick_cases
from .labels import step_labels
from .rollout import FOLLOW, sibling_sets
from .stats import paired, wilson

SETS, METRICS, TABLE = "sets.jsonl", "metrics.json", "metrics.md"


def held_out_cases(n: int, seed: int = 0, held: bool = True) -> list[Case]:
    """``n`` held-out live cases (``held_out``), mixed across categories as the PRM
    data are, none of them among the queries the shipped PRM's data were drawn from
    (train or val), so the shipped head is compared on queries it never saw either.
    ``held=False``: cases from the training side instead (walks to train a reader on)."""
    seen = {c.id for c in pick_cases(DataConfig())} if held else set()
    rng = random.Random(f"siblings:{seed}")
    pools = {}
    for cat in DEFAULT_MIX:
        pool = [c for c in load_cases(cat)
                if held_out(c.id) == held and c.id not in seen and c.id not in KNOWN_UNSATISFIABLE]
        rng.shuffle(pool)
        pools[cat] = pool
    total = sum(DEFAULT_MIX.values())
    want = {cat: max(1, round(n * s / total)) for cat, s in DEFAULT_MIX.items()}
    out: list[Case] = []
    for i in range(max(want.values())):
        out += [pools[cat][i] for cat in pools if i < want[cat] and i < len(pools[cat])]
    assert_not_test(out)
    return out[:n]


def _set_record(case: Case, walk: str, parent: str, candidates, scores: dict[str, list[float]]) -> dict:
    return {"query": case.id, "category": case.category, "walk": walk, "parent": parent,
            # the whole output: a candidate whose call repeats an earlier one ends the list
            # without it (the search's end-on-repeat), so it need not extend the parent
            "candidates": [{"text": c.text, "kind": c.events[-1].kind if c.events else "",
                            "label": int(step_labels(case, c.events)[-1]) if c.events else 1,
                            # what a text reader renders (``reward.render``): every event
                            "events": [[e.kind, e.call, e.key, e.value] for e in c.events],
                            "scores": {k: round(v[i], 6) for k, v in scores.items()}}
                           for i, c in enumerate(candidates)]}


def collect(out: Path, cases: list[Case], *, m: int = 4, follow: tuple[str, ...] = FOLLOW,
            seed: int = 0, max_new_tokens: int = 192, max_prompt_tokens: int = 1400,
            resume: bool = False, progress: bool = True) -> None:
    """Walk, label and score; append each query's sets to ``out/sets.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SETS
    done = set()
    if resume and path.exists():
        for line in path.read_text().splitlines():
            try:
                done.add(json.loads(line)["query"])
            except (ValueError, KeyError):
                continue
    elif path.exists():
        path.unlink()
    policy = get_policy()
    scorers = {"prm": default_scorer(policy), "policy": PolicyScorer()}
    with open(path, "a") as f:
        for qi, case in enumerate(tqdm(cases, desc="sibling sets", unit="query", disable=not progress)):
            if case.id in done:
                continue
            try:
                q = prepare(policy.tokenizer, case.messages, case.tools)
            except ToolprmError:
                continue  # a schema the grammar refuses: no search runs on it either
            if len(q.prompt_ids) > max_prompt_tokens:
                continue
            lines = []
            for walk in follow:
                try:
                    sets, _ = sibling_sets(policy, q, m=m, exploration=Exploration(), follow=walk,
                                           seed=seed * 100003 + qi, max_new_tokens=max_new_tokens)
                except ToolprmError:
                    continue
                for s in sets:
                    scores = {name: sc.score(q, s.candidates) for name, sc in scorers.items()}
                    lines.append(json.dumps(_set_record(case, walk, s.parent, s.candidates, scores),
                                            ensure_ascii=False))
            if not lines:  # the query is still marked done
                lines.append(json.dumps({"query": case.id, "category": case.category, "walk": "",
                                         "parent": "", "candidates": []}))
            f.write("\n".join(lines) + "\n")
            f.flush()


def judged(records: list[dict], scorer: str) -> list[tuple[str, int, float, int]]:
    """Per set with a right and a wrong candidate: (its decision, whether ``scorer``'s
    top candidate is right, the (right, wrong) pairs it orders right, ties half, and
    the number of such pairs). A decision is the step kinds its candidates end in,
    e.g. "end+name": close the list or begin another call."""
    out = []
    for r in records:
        cands = r["candidates"]
        ys = [c["label"] for c in cands]
        if not (0 < sum(ys) < len(ys)):
            continue
        sc = [c["scores"][scorer] for c in cands]
        best = max(range(len(cands)), key=lambda i: sc[i])
        pos = [s for s, y in zip(sc, ys) if y]
        neg = [s for s, y in zip(sc, ys) if not y]
        right = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
        out.append(("+".join(sorted({c["kind"] for c in cands})), ys[best], right, len(pos) * len(neg)))
    return out


def rank_metrics(records: list[dict], scorer: str) -> dict:
    """Top-1 and pairwise accuracy of ``scorer`` over the sets with a right and a
    wrong candidate, overall and per decision."""
    by: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
    for kind, hit, right, pairs in judged(records, scorer):
        for key in ("all", kind):
            by[key].append((hit, right, pairs))
    out = {}
    for key, rows in sorted(by.items(), key=lambda kv: (kv[0] != "all", -len(kv[1]))):
        top1 = sum(r[0] for r in rows)
        pairs = sum(r[2] for r in rows)
        out[key] = {"sets": len(rows), "top1": top1 / len(rows), "top1_ci95": list(wilson(top1, len(rows))),
                    "pairs": pairs, "pairwise": sum(r[1] for r in rows) / pairs if pairs else None}
    return out


def summarize(out: Path) -> dict:
    records = [json.loads(line) for line in (out / SETS).read_text().splitlines() if line.strip()]
    sets = [r for r in records if r["candidates"]]
    scorers = sorted({k for r in sets for c in r["candidates"] for k in c["scores"]})
    metrics = {s: rank_metrics(sets, s) for s in scorers}
    hits = {s: [j[1] for j in judged(sets, s)] for s in scorers}
    test = paired(hits["prm"], hits["policy"]) if {"prm", "policy"} <= set(hits) else None
    return {"queries": len({r["query"] for r in records}), "sets": len(sets),
            "candidates": sum(len(r["candidates"]) for r in sets),
            "positive_rate": _mean(c["label"] for r in sets for c in r["candidates"]),
            "scorers": metrics, "prm_vs_policy_top1": test}


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def markdown(s: dict, command: str = "") -> str:
    side = "training-side" if s.get("train_side") else "held-out"
    lines = [f"Sibling ranking on {s['queries']} {side} live queries: {s['sets']} sets, "
             f"{s['candidates']} candidates ({100 * (s['positive_rate'] or 0):.1f}% right)"
             + (f", from `{command}`" if command else "") + ". Counted: the sets that hold a right "
             "and a wrong candidate.", "",
             "| decision | sets | " + " | ".join(f"{n} top-1 [95% CI] | {n} pairwise" for n in s["scorers"])
             + " | pairs |",
             "|---|---:|" + "---:|---:|" * len(s["scorers"]) + "---:|"]
    names = list(s["scorers"])
    keys = list(s["scorers"][names[0]]) if names else []
    for key in keys:
        cells = []
        for n in names:
            b = s["scorers"][n][key]
            lo, hi = b["top1_ci95"]
            pw = "—" if b["pairwise"] is None else f"{b['pairwise']:.3f}"
            cells += [f"{b['top1']:.3f} [{lo:.2f}, {hi:.2f}]", pw]
        first = s["scorers"][names[0]][key]
        lines.append(f"| {key} | {first['sets']} | " + " | ".join(cells) + f" | {first['pairs']} |")
    t = s.get("prm_vs_policy_top1")
    if t:
        lines += ["", f"Top-1, PRM against the policy's confidence on the same sets: only the PRM right "
                      f"{t['only_a']}, only the policy right {t['only_b']} (McNemar exact p = {t['p']:.3g})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="toolprm train siblings", description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=60, help="held-out live queries")
    p.add_argument("-m", type=int, default=4, help="samples per free-form value (as fine_beam's m)")
    p.add_argument("--follow", default="both", choices=FOLLOW + ("both",),
                   help="how a walk picks its next parent: the policy's likeliest candidate, a "
                        "seeded random one, or one walk of each per query (default)")
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", default="out/siblings")
    p.add_argument("--resume", action="store_true", help="go on with an interrupted run")
    p.add_argument("--train-side", action="store_true",
                   help="walk training-side queries instead of held-out ones (data for a reader)")
    p.add_argument("--shard", default="0/1", metavar="K/J",
                   help="only every J-th query from the K-th (run J processes into J folders)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.queries < 1 or a.m < 1:
        raise ToolprmError("--queries and -m must be positive integers")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    follow = FOLLOW if a.follow == "both" else (a.follow,)
    t0 = time.perf_counter()
    try:
        k, j = (int(x) for x in a.shard.split("/"))
        assert 0 <= k < j
    except (ValueError, AssertionError):
        raise ToolprmError(f"--shard wants K/J with 0 <= K < J, got {a.shard!r}") from None
    cases = held_out_cases(a.queries, a.seed, held=not a.train_side)[k::j]
    collect(out, cases, m=a.m, follow=follow, seed=a.seed,
            max_new_tokens=a.max_new_tokens, resume=a.resume, progress=not a.no_progress)
    s = summarize(out)
    s["seconds"] = round(time.perf_counter() - t0, 1)
    command = "toolprm train siblings " + " ".join(shlex.quote(x) for x in argv)
    s["command"] = command
    s["train_side"] = a.train_side
    table = markdown(s, command)
    (out / METRICS).write_text(json.dumps(s, indent=2) + "\n")
    (out / TABLE).write_text(table + "\n")
    print(table)
    return 0
