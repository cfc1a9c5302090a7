"""Readers compared on the same held-out sibling sets: ``toolprm train readers``.

Two kinds of held-out sets, both from live queries no reader trained on
(``bfcl.held_out``):

* policy walks (``toolprm train siblings``): the search's own candidate generator
  with the policy in the loop, scored when made by the shipped head ("prm") and the
  policy's confidence ("policy"), and from those two the hybrid ("hybrid": the
  policy for value steps, the head for the rest); every other reader is scored here
  on the same sets;
* gold walks (``toolprm train sets --held-out``): the sets along right answers, with
  masked copies; only text readers can score them (no policy hidden state);
* NESTFUL gold walks (``toolprm train sets --nestful``): the same on another
  benchmark's single-turn samples (``bfcl.nestful``), a check of generalisation.

``--max-sets N`` scores an evenly spread N of each kind's sets (the same for every
reader), for readers too slow to read them all.

Per reader and kind of set: sibling top-1 over the sets with a right and a wrong
candidate, pairwise accuracy over their (right, wrong) pairs, the AUC of the first
step's ``[]`` score on irrelevant against relevant queries, the balanced accuracy
of the end step (close the list after a call) at 0.5, the expected calibration
error of the step score (10 bins), and the reader's scoring time per candidate.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from toolprm.bfcl import IRRELEVANCE_CATEGORIES, load_cases
from toolprm.errors import ToolprmError
from toolprm.grammar import normalize_tools
from toolprm.reward.encoder import ENCODER_CHECKPOINT, load, logits
from toolprm.reward.render import render

from .gold_sets import read_queries, read_sets
from .readme import replace_block
from .evaluate import auc, balanced_accuracy
from .siblings import SETS, judged, rank_metrics
from .stats import paired, wilson


def walk_sets(folder: str | Path) -> list[dict]:
    """A ``train siblings`` folder's sets, each candidate with its rendered pair."""
    records = [json.loads(l) for l in Path(folder, SETS).read_text().splitlines() if l.strip()]
    records = [r for r in records if r["candidates"]]
    cases = {}
    for cat in {r["category"] for r in records}:
        for c in load_cases(cat):
            cases[c.id] = c
    specs = {}
    for r in records:
        if r["query"] not in specs:
            c = cases[r["query"]]
            specs[r["query"]] = (c.messages, [t.spec() for t in normalize_tools(c.tools)])
        messages, tools = specs[r["query"]]
        for c in r["candidates"]:
            c["pair"] = render(messages, tools, c["events"])
            sc = c["scores"]
            if "prm" in sc and "policy" in sc:
                # The hybrid scorer (reward.prm, values="policy") multiplies the parent's
                # score by the policy's confidence at a value step and by the head's
                # otherwise. A set's candidates share their parent, and nearly every set
                # is all values or holds none, so this orders it as the hybrid does (a
                # set mixing a value with an end, 2 of 252 in results/readers-hybrid,
                # only approximately: the head's score there is the prefix's).
                sc["hybrid"] = sc["policy"] if c["kind"] == "value" else sc["prm"]
    return records


def gold_sets(folder: str | Path) -> list[dict]:
    queries = read_queries(folder)
    out = []
    for s in read_sets(folder):
        q = queries[s["query"]]
        for c in s["candidates"]:
            c["pair"] = render(q["messages"], q["tools"], c["events"])
            c["scores"] = {}
        out.append(s)
    return out


def add_encoder_scores(sets: list[dict], name: str, path: str | Path, bf16: bool = True) -> float:
    """Score every candidate with the checkpoint at ``path`` under ``name``; seconds per candidate."""
    model, tok, manifest = load(path)
    pairs = [c["pair"] for s in sets for c in s["candidates"]]
    t0 = time.perf_counter()
    z = torch.sigmoid(logits(model, tok, pairs, max_length=int(manifest.get("max_length", 192)), bf16=bf16)).tolist()
    per = (time.perf_counter() - t0) / max(1, len(pairs))
    at = 0
    for s in sets:
        for c in s["candidates"]:
            c["scores"][name] = z[at]
            at += 1
    return per


def ece(scores: list[float], labels: list[int], bins: int = 10) -> float | None:
    if not scores:
        return None
    total = 0.0
    for b in range(bins):
        idx = [i for i, s in enumerate(scores) if b / bins <= s < (b + 1) / bins or (b == bins - 1 and s == 1.0)]
        if idx:
            conf = sum(scores[i] for i in idx) / len(idx)
            acc = sum(labels[i] for i in idx) / len(idx)
            total += len(idx) / len(scores) * abs(conf - acc)
    return total


def metrics(sets: list[dict], scorer: str) -> dict:
    """The reader ``scorer``'s metrics on ``sets`` (module docstring); ``hits`` is its
    top-1 outcome per counted set, for paired tests."""
    rows = judged(sets, scorer)
    hits = [r[1] for r in rows]
    right, pairs = sum(r[2] for r in rows), sum(r[3] for r in rows)
    empty_y, empty_s, end_y, end_s, all_y, all_s = [], [], [], [], [], []
    for s in sets:
        for c in s["candidates"]:
            sc = c["scores"][scorer]
            all_y.append(c["label"])
            all_s.append(sc)
            if s["parent"] == "" and c["text"] == "[]":
                empty_y.append(s["category"] in IRRELEVANCE_CATEGORIES)
                empty_s.append(sc)
            elif c["kind"] == "end":
                end_y.append(c["label"])
                end_s.append(sc)
    k = sum(hits)
    return {"sets": len(hits), "top1": k / len(hits) if hits else None,
            "top1_ci95": list(wilson(k, len(hits))) if hits else None,
            "pairs": pairs, "pairwise": right / pairs if pairs else None,
            "empty_auc": auc(np.array(empty_y), np.array(empty_s)),
            "empty_n": [sum(empty_y), len(empty_y) - sum(empty_y)],
            "end_balanced_accuracy": balanced_accuracy(np.array(end_y), np.array(end_s) >= 0.5) if end_y else None,
            "end_n": [sum(end_y), len(end_y) - sum(end_y)], "ece": ece(all_s, all_y), "hits": hits}


def _spread(sets: list[dict], n: int | None) -> list[dict]:
    if n is None or n >= len(sets):
        return sets
    return [sets[i * len(sets) // n] for i in range(n)]


def compare(walks: str | Path | None, gold: str | Path | None, encoders: dict[str, str], bf16: bool = True,
            nestful: str | Path | None = None, max_sets: int | None = None) -> dict:
    out: dict = {"sources": {}, "seconds_per_candidate": {}, "max_sets": max_sets}
    for source, sets in (("policy walks", walk_sets(walks) if walks else None),
                         ("gold walks", gold_sets(gold) if gold else None),
                         ("NESTFUL gold walks", gold_sets(nestful) if nestful else None)):
        if not sets:
            continue
        sets = _spread(sets, max_sets)
        for name, path in encoders.items():
            out["seconds_per_candidate"][name] = add_encoder_scores(sets, name, path, bf16)
        names = sorted({k for s in sets for c in s["candidates"] for k in c["scores"]})
        m = {n: metrics(sets, n) for n in names}
        for n in names:
            m[n]["by_decision"] = {k: {"sets": v["sets"], "top1": v["top1"], "pairwise": v["pairwise"]}
                                   for k, v in rank_metrics(sets, n).items() if k != "all"}
        tests = {}
        for a in names:
            for b in names:
                if a < b:
                    tests[f"{a} vs {b}"] = paired(m[a]["hits"], m[b]["hits"])
        for n in names:
            m[n].pop("hits")
        out["sources"][source] = {"queries": len({s["query"] for s in sets}), "set_count": len(sets),
                                  "candidates": sum(len(s["candidates"]) for s in sets),
                                  "readers": m, "top1_tests": tests}
    return out


def _f(x, d=3):
    return "—" if x is None else f"{x:.{d}f}"


def markdown(r: dict, command: str = "") -> str:
    lines = []
    for source, s in r["sources"].items():
        kind = "NESTFUL" if source.startswith("NESTFUL") else "live"
        lines += [f"**{source}**: {s['queries']} held-out {kind} queries, {s['set_count']} sibling sets"
                  f"{' (an evenly spread ' + str(r['max_sets']) + ')' if r.get('max_sets') else ''}, "
                  f"{s['candidates']} candidates. Top-1 and pairwise over the sets with a right and a wrong "
                  "candidate.", "",
                  "| reader | sets | top-1 [95% CI] | pairwise | pairs | `[]` AUC (irr/rel) | end bal. acc (right/wrong) | ECE |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n, m in s["readers"].items():
            ci = m["top1_ci95"]
            lines.append(f"| {n} | {m['sets']} | {_f(m['top1'])} [{_f(ci[0], 2)}, {_f(ci[1], 2)}] | "
                         f"{_f(m['pairwise'])} | {m['pairs']} | {_f(m['empty_auc'])} ({m['empty_n'][0]}/{m['empty_n'][1]}) | "
                         f"{_f(m['end_balanced_accuracy'])} ({m['end_n'][0]}/{m['end_n'][1]}) | {_f(m['ece'])} |")
        names = list(s["readers"])
        decisions = list(s["readers"][names[0]]["by_decision"]) if names else []
        if decisions:
            lines += ["", "Top-1 by decision (the step kinds a set's candidates end in; `end+name`: close "
                          "the list or call another tool):", "",
                      "| decision | sets | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
            for d in decisions:
                row = [s["readers"][n]["by_decision"][d] for n in names]
                lines.append(f"| {d} | {row[0]['sets']} | " + " | ".join(_f(b["top1"]) for b in row) + " |")
        for k, t in s["top1_tests"].items():
            a, b = k.split(" vs ")
            lines.append(f"\nTop-1, {a} against {b}: only {a} right {t['only_a']}, only {b} right "
                         f"{t['only_b']} (McNemar exact p = {t['p']:.3g}).")
        lines.append("")
    if r["seconds_per_candidate"]:
        threads = r.get("threads", 1)
        lines.append(f"Scoring time per candidate ({threads} thread{'s' if threads != 1 else ''}, this run): " + ", ".join(
            f"{n} {1000 * v:.1f} ms" for n, v in r["seconds_per_candidate"].items()) + ".")
    if command:
        lines.append(f"\nCommand: `{command}`")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="toolprm train readers", description=__doc__.split("\n\n")[0])
    p.add_argument("--walks", default=None, help="a `toolprm train siblings` folder (policy walks)")
    p.add_argument("--gold", default=None, help="a `toolprm train sets --held-out` folder")
    p.add_argument("--nestful", default=None, help="a `toolprm train sets --nestful` folder")
    p.add_argument("--max-sets", type=int, default=None,
                   help="score an evenly spread N sets of each source (default: all)")
    p.add_argument("--encoder", action="append", default=None, metavar="NAME=PATH",
                   help="a text reader's checkpoint to score: a cross-encoder or a generative reader "
                        "(repeatable; default: minilm=the shipped cross-encoder)")
    p.add_argument("--no-encoder", action="store_true",
                   help="score no text reader: only what the sets carry (the head, the policy, the hybrid)")
    p.add_argument("--fp32", action="store_true",
                   help="score in fp32 (default: bf16 autocast, as the search's scorer does)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/readers", help="writes metrics.json and metrics.md here")
    p.add_argument("--report", action="append", default=[], metavar="PATH",
                   help="also write the table here (repeatable; e.g. the checkpoint's metrics.md)")
    p.add_argument("--readme", default=None, help="replace a results block of this README")
    p.add_argument("--tag", default="readers-results", help="the README block to replace")
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.no_encoder and a.encoder:
        raise ToolprmError("--no-encoder and --encoder contradict each other")
    specs = [] if a.no_encoder else a.encoder or [f"minilm={ENCODER_CHECKPOINT}"]
    bad = [e for e in specs if "=" not in e or not e.split("=", 1)[0]]
    if bad:
        raise ToolprmError(f"--encoder wants NAME=PATH, got {bad[0]!r}")
    encoders = dict(e.split("=", 1) for e in specs)
    command = "toolprm train readers " + " ".join(shlex.quote(x) for x in argv)
    if a.max_sets is not None and a.max_sets < 1:
        raise ToolprmError("--max-sets must be positive")
    r = compare(a.walks, a.gold, encoders, not a.fp32, a.nestful, a.max_sets)
    r["command"] = command
    r["threads"] = a.threads
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(r, indent=2) + "\n")
    table = markdown(r, command)
    (out / "metrics.md").write_text(table + "\n")
    for path in a.report:
        Path(path).write_text(table + "\n")
    if a.readme:
        replace_block(a.readme, a.tag, table)
    print(table)
    return 0


__all__ = ["compare", "metrics", "ece", "markdown", "walk_sets", "gold_sets", "main"]
