"""`toolprm bench ends`: who can read the end decision — close the call list, or call again?

On live queries with a ground truth (live_simple, live_multiple, live_parallel,
live_parallel_multiple), the ground truth's calls are written out one by one, and
after each call the list either goes on (another gold call follows) or closes.
Each such boundary is read by:

* ``policy``: the policy's own P(go on), read along the canonical tokens of
  ``}}, {"`` against ``}}]`` right after the call's last value (the grammar-masked
  probabilities, as the search's enumerated end step sees them);
* ``cue``: a text cue that needs no model: the number of values the calls so far
  took from the query that stand next to a coordination (``and``, ``or``, a
  comma, ``&``, ``vs``, ``as well as``, ``also``, ``then``, ``;``) whose other
  side no call has used yet ("weather in Paris and Tokyo", after Paris);
* ``text``: the text end reader's P(goes on) (``reward.ends``; ``toolprm train ends``
  trains it on the same live queries' training side, so read its held-out split).

Reported per reader, over the boundaries of the train and the held-out live
queries (``bfcl.held_out``) apart: the AUC of the score for "goes on",
the balanced accuracy at the reader's own cut (P ≥ 0.5; a cue > 0), and the mean
score by category and outcome. Nothing here is chosen or trained: it measures.
Live categories only, by construction.

Writes ``cases.jsonl`` (resumable), ``summary.json`` and ``table.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from toolprm.bfcl import ground_truth_calls, held_out, load_cases
from toolprm.engine.explore import query_text
from toolprm.engine.models import get_policy
from toolprm.engine.query import prepare
from toolprm.errors import InvalidTokenError, ToolprmError
from toolprm.reward.ends import coordination_cue, load_end_reader
from toolprm.reward.features import ToolIndex
from toolprm.train.evaluate import auc, balanced_accuracy

from toolprm.train.readme import publish

CATEGORIES = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
READERS = {"policy": 0.5, "cue": 1.0, "text": 0.5}  # the cut at or above which a reader says "goes on"


def boundary_records(policy, case, reader=None) -> list[dict]:
    """One record per gold call of ``case``: does the list go on after it, and what
    each reader says. [] where the ground truth is outside the grammar."""
    calls = ground_truth_calls(case)
    q = prepare(policy.tokenizer, case.messages, case.tools)
    dec = q.decoder(policy, "any", max_new_tokens=2048)
    vocab = dec.grammar.vocab
    query = query_text(case.messages)
    index = ToolIndex(case.messages, q.tools)
    out, text = [], "["
    for k, call in enumerate(calls):
        written = json.dumps(call, ensure_ascii=False)
        prefix = (text + written[:-2]).encode()  # up to the end of the call's last value
        try:
            for tail in (b"}}, {", b"}}]"):
                dec.rows[0].state.advance_bytes(prefix + tail)
        except InvalidTokenError:
            return out
        go, close = dec.continuations_logprob(0, [vocab.canonical(prefix + b'}}, {"'),
                                                  vocab.canonical(prefix + b"}}]")])
        out.append({"id": case.id, "category": case.category, "held_out": held_out(case.id), "k": k,
                    "calls": len(calls), "goes_on": k < len(calls) - 1,
                    "policy": 1 / (1 + math.exp(close - go)), "cue": coordination_cue(query, calls[:k + 1]),
                    **({"text": reader.p_more(index, calls[:k + 1])} if reader else {})})
        text += written + ", "
    return out


def summarize(records: list[dict]) -> dict:
    out: dict = {"boundaries": len(records), "splits": {}}
    for split, want in (("train", False), ("held-out", True)):
        rs = [r for r in records if r["held_out"] == want]
        if not rs:
            continue
        y = np.array([r["goes_on"] for r in rs])
        s: dict = {"boundaries": len(rs), "goes_on": int(y.sum()), "readers": {}}
        for name, cut in ((n, c) for n, c in READERS.items() if all(n in r for r in rs)):
            x = np.array([r[name] for r in rs], dtype=float)
            means = {f"{cat} {'goes on' if lab else 'closes'}": float(np.mean([r[name] for r in rs
                                                                              if r["category"] == cat and r["goes_on"] == lab]))
                     for cat in CATEGORIES for lab in (True, False)
                     if any(r["category"] == cat and r["goes_on"] == lab for r in rs)}
            s["readers"][name] = {"auc": auc(y, x) if 0 < y.sum() < len(y) else None,
                                  "balanced_accuracy": balanced_accuracy(y, x >= cut) if 0 < y.sum() < len(y) else None,
                                  "mean": means}
        out["splits"][split] = s
    return out


def table(s: dict, command: str) -> str:
    def f(x):
        return "—" if x is None else f"{x:.3f}"

    lines = [f"Measured with `{command}` (SmolLM2-135M unless the command names another model).", ""]
    for split, v in s["splits"].items():
        lines += [f"**{split} live queries**: {v['boundaries']} call boundaries, {v['goes_on']} followed by "
                  "another call.", "", "| reader | AUC (goes on) | balanced accuracy at its cut |",
                  "|---|---:|---:|"]
        for name, r in v["readers"].items():
            cut = "cue > 0" if name == "cue" else "P ≥ 0.5"
            lines.append(f"| {name} | {f(r['auc'])} | {f(r['balanced_accuracy'])} ({cut}) |")
        names = list(v["readers"])
        lines += ["", "| mean score | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for key in v["readers"][names[0]]["mean"]:
            lines.append(f"| {key} | " + " | ".join(f"{v['readers'][n]['mean'][key]:.3f}" for n in names) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench ends", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=60, help="queries per live category (default 60)")
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/ends")
    p.add_argument("--readme", default=None, help="also put the table into this file's --tag block")
    p.add_argument("--tag", default="ends-results", help="the README block to write (default ends-results)")
    a = p.parse_args(argv)
    if a.limit < 1:
        raise ToolprmError("--limit must be at least 1")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cases.jsonl"
    records = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
    skips = out / "skipped.txt"  # queries with no boundary to read: not retried on resume
    done = {r["id"] for r in records} | set(skips.read_text().split() if skips.exists() else ())
    cases = [c for cat in CATEGORIES for c in load_cases(cat, a.limit) if c.id not in done]
    policy = get_policy(a.model) if cases else None
    reader = load_end_reader()
    with path.open("a") as f, skips.open("a") as skipped:
        for case in tqdm(cases, desc="ends", unit="query"):
            try:
                new = boundary_records(policy, case, reader)
            except ToolprmError as e:  # a tool set the grammar refuses: named, not hidden
                tqdm.write(f"{case.id}: {e}")
                new = []
            if not new:
                skipped.write(case.id + "\n")
            for r in new:
                f.write(json.dumps(r) + "\n")
            f.flush()
            skipped.flush()
            records += new
    publish(out, summarize(records), table, "toolprm bench ends", argv, a.readme, a.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
