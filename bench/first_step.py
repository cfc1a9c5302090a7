"""`toolprm bench first-step`: can the first step tell an irrelevant query apart?

BFCL's irrelevance category wants ``[]`` (no call). The first choice of the
output is between ``]`` (the empty list) and a first call, and the search can
only pick ``[]`` if the policy samples it or the scorer prefers it. For each case
this prints the policy's grammar-masked probability of the empty list at that
choice, the default scorer's (the shipped PRM's) score of the greedy first name
step and of ``[]`` (which the beam searches offer beside their samples), and how
often it scores ``[]`` higher; then, per signal, the AUC of telling irrelevance
cases from the others (1.0: perfectly apart; 0.5: no signal).
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from toolprm.bfcl import TEST_CATEGORIES, load_cases
from toolprm.engine.models import get_policy
from toolprm.engine.query import prepare
from toolprm.engine.search import candidate
from toolprm.errors import ToolprmError
from toolprm.reward import default_scorer
from toolprm.train.evaluate import auc


def empty_list_probability(dec) -> float:
    """P(the next token closes the list empty) under the grammar-masked policy."""
    s = dec.rows[0]
    probs = dec.next_log_probs(0).exp()
    total = 0.0
    for t in s.state.allowed_token_ids().tolist():
        nxt = s.state.advance(t)
        if any(e.kind == "end" for e in nxt.events[len(s.state.events):]):
            total += float(probs[t])
    return total


def first_step(policy, scorer, case) -> dict:
    query = prepare(policy.tokenizer, case.messages, case.tools)
    dec = query.decoder(policy, "any", temperature=0.0, max_new_tokens=128,
                        want_hidden=getattr(scorer, "needs_hidden", False))
    dec.feed_forced()
    p_empty = empty_list_probability(dec)
    dec.fork([0], empty=True)  # the [] the beam searches offer beside the samples
    row, empty = dec.run(lambda s, ev: bool(ev))
    first = row.state.events[0]
    score, score_empty = scorer.score(query, [candidate(row), candidate(empty)])
    return {"id": case.id, "category": case.category, "p_empty": p_empty, "first": first.kind,
            "name": first.value if first.kind == "name" else None, "prm": float(score),
            "prm_empty": float(score_empty)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench first-step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--category", action="append", choices=TEST_CATEGORIES,
                   help="categories (default: irrelevance, simple_python, multiple)")
    p.add_argument("--limit", type=int, default=20, help="cases per category (default 20)")
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the per-case rows to this file")
    a = p.parse_args(argv)
    if a.limit < 1:
        raise ToolprmError("--limit must be a positive integer")
    if a.threads:
        torch.set_num_threads(a.threads)
    cats = a.category or ["irrelevance", "simple_python", "multiple"]
    policy = get_policy(a.model)
    scorer = default_scorer(policy)
    rows = []
    with torch.inference_mode():
        for cat in cats:
            for case in load_cases(cat, a.limit):
                rows.append(first_step(policy, scorer, case))
    print("| category | cases | mean P([]) | mean PRM score of the first name | mean PRM score of [] "
          "| PRM prefers [] |")
    print("|---|---:|---:|---:|---:|---:|")
    for cat in cats:
        rs = [r for r in rows if r["category"] == cat]
        named = [r for r in rs if r["first"] == "name"]
        mean_prm = f"{sum(r['prm'] for r in named) / len(named):.3f}" if named else "—"
        prefers = sum(1 for r in named if r["prm_empty"] > r["prm"])
        print(f"| {cat} | {len(rs)} | {sum(r['p_empty'] for r in rs) / len(rs):.3f} | {mean_prm} "
              f"| {sum(r['prm_empty'] for r in rs) / len(rs):.3f} | {prefers}/{len(named)} |")
    irr = [r for r in rows if r["category"] == "irrelevance"]
    rel = [r for r in rows if r["category"] != "irrelevance"]
    for name, key, sign in (("P([])", "p_empty", 1), ("PRM first-name score", "prm", -1),
                            ("PRM score of []", "prm_empty", 1)):
        # A low PRM score of the first name should mean "irrelevant": hence the sign.
        keep = (lambda r: r["first"] == "name") if key == "prm" else (lambda r: True)
        pos, neg = [sign * r[key] for r in irr if keep(r)], [sign * r[key] for r in rel if keep(r)]
        v = auc([1] * len(pos) + [0] * len(neg), pos + neg)
        if v is not None and not math.isnan(v):
            print(f"AUC of {name} for irrelevance against the other categories: {v:.3f}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
