"""`toolprm bench canonical`: canonical forcing against longest-match forcing, in one run.

Jump-forward used to force every byte of a unique continuation as the longest
vocabulary tokens; canonical forcing spells it as the tokenizer does and leaves a
trailing token that the next choice could merge into to the model (``State.forced``).
Both run greedy on the same cases, interleaved case by case:

* canonical share: the greedy output's ids equal the tokenizer's encoding of its
  text, on BFCL's live cases;
* greedy accuracy (BFCL's checker, with 95% Wilson intervals) and calls per case,
  per category, on live and non-live cases (the non-live ones are reported only:
  nothing is chosen on them), and McNemar's exact test of the paired outcomes;
* P(continue) after a first call: on live parallel cases, the policy's probability
  of going on to a second call rather than closing the list right after the
  ground truth's first call, read along the canonical tokens (``}``, ``},``, `` {"``
  against ``}}``, ``]``) and along the forced ``}}`` token (then ``,`` against ``]``);
* forward passes per output token and wall time per case, as ratios.

Writes ``cases.jsonl`` (resumable), ``summary.json`` and ``table.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

from toolprm.bfcl import TEST_CATEGORIES, check, ground_truth_calls, load_cases
from toolprm.engine.decode import never
from toolprm.engine.models import get_policy
from toolprm.engine.query import prepare
from toolprm.engine.workers import run_jobs, threads_per_job
from toolprm.errors import InvalidTokenError, ToolprmError

from toolprm.train.readme import publish
from toolprm.train.stats import paired, wilson

MODES = {"longest": False, "canonical": True}
LIVE = {"live_simple": 30, "live_multiple": 30, "live_parallel": 16, "live_parallel_multiple": 24,
        "live_irrelevance": 20}
PARALLEL_LIVE = ("live_parallel", "live_parallel_multiple")


def greedy_record(policy, case, mode: str, max_new_tokens: int) -> dict:
    """One greedy output under one forcing rule, scored by BFCL's checker."""
    t0 = time.perf_counter()
    q = prepare(policy.tokenizer, case.messages, case.tools)
    dec = q.decoder(policy, "any", temperature=0.0, max_new_tokens=max_new_tokens, canonical=MODES[mode])
    row = dec.run(never)[0]
    seconds = time.perf_counter() - t0
    calls = row.state.events[-1].value
    st = dec.stats
    return {"kind": "greedy", "id": case.id, "category": case.category, "mode": mode,
            "text": row.state.text, "n_calls": len(calls), "correct": check(case, calls).correct,
            "canonical": policy.tokenizer.encode(row.state.text, add_special_tokens=False) == row.tokens,
            "output_tokens": len(row.tokens), "generated": st.generated_tokens, "forced": st.forced_tokens,
            "passes": st.forward_passes - 1, "seconds": round(seconds, 4)}


def continue_record(policy, case) -> dict:
    """P(a second call) right after the ground truth's first call, both ways of spelling."""
    first = json.dumps(ground_truth_calls(case)[0], ensure_ascii=False)
    prefix = ("[" + first[:-2]).encode()  # up to the end of the first call's last value
    q = prepare(policy.tokenizer, case.messages, case.tools)
    dec = q.decoder(policy, "any", max_new_tokens=512)
    v = dec.grammar.vocab
    try:
        dec.rows[0].state.advance_bytes(prefix + b"}}, {")
    except InvalidTokenError:
        return {"kind": "continue", "id": case.id, "category": case.category, "skipped": "outside schema"}
    close2 = v.longest_match(b"}}")
    paths = [v.canonical(prefix + b'}}, {"'), v.canonical(prefix + b"}}]"),
             v.canonical(prefix) + close2 + v.canonical(b', {"'), v.canonical(prefix) + close2 + v.canonical(b"]")]
    lp = dec.continuations_logprob(0, paths)
    return {"kind": "continue", "id": case.id, "category": case.category,
            "canonical": 1 / (1 + math.exp(lp[1] - lp[0])), "longest": 1 / (1 + math.exp(lp[3] - lp[2]))}


def _run_share(cases: list, out: str, max_new_tokens: int, model: str | None, position: int) -> None:
    path = Path(out)
    done = {(r["kind"], r["id"], r.get("mode")) for r in _read(path)}
    policy = get_policy(model)
    with open(path, "a", encoding="utf-8") as f:
        for case in tqdm(cases, desc=f"cases {position + 1}", position=position, file=sys.stderr):
            if ("skipped", case.id, None) in done:
                continue
            recs = []
            try:
                for mode in MODES:  # interleaved: the two rules meet the same machine load
                    if ("greedy", case.id, mode) not in done:
                        recs.append(greedy_record(policy, case, mode, max_new_tokens))
                if case.category in PARALLEL_LIVE and ("continue", case.id, None) not in done:
                    recs.append(continue_record(policy, case))
            except ToolprmError as e:  # a tool set the grammar refuses, or a generation error
                recs = [{"kind": "skipped", "id": case.id, "category": case.category, "mode": None,
                         "why": str(e)[:300]}]
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line cut short by an interrupted run
    return out


def summarize(records: list[dict]) -> dict:
    greedy = [r for r in records if r["kind"] == "greedy"]
    cats = list(dict.fromkeys(r["category"] for r in greedy))
    out: dict = {"categories": {}, "modes": {},
                 "skipped": list(dict.fromkeys(f"{r['id']}: {r['why']}" for r in records
                                               if r["kind"] == "skipped"))}
    for mode in MODES:
        rs = [r for r in greedy if r["mode"] == mode]
        live = [r for r in rs if r["category"].startswith("live_")]
        k = sum(r["canonical"] for r in live)
        out["modes"][mode] = {
            "cases": len(rs), "live_cases": len(live), "canonical_share": k / len(live) if live else None,
            "canonical_ci": wilson(k, len(live)),
            "passes_per_output_token": sum(r["passes"] for r in rs) / max(1, sum(r["output_tokens"] for r in rs)),
            "seconds_per_case": sum(r["seconds"] for r in rs) / max(1, len(rs)),
        }
    for cat in cats:
        row = {}
        for mode in MODES:
            rs = sorted((r for r in greedy if r["mode"] == mode and r["category"] == cat), key=lambda r: r["id"])
            k = sum(r["correct"] for r in rs)
            row[mode] = {"n": len(rs), "correct": k, "acc": k / len(rs) if rs else None, "ci": wilson(k, len(rs)),
                         "calls_per_case": sum(r["n_calls"] for r in rs) / max(1, len(rs))}
        a = {r["id"]: r["correct"] for r in greedy if r["mode"] == "canonical" and r["category"] == cat}
        b = {r["id"]: r["correct"] for r in greedy if r["mode"] == "longest" and r["category"] == cat}
        ids = sorted(set(a) & set(b))
        row["paired"] = paired([a[i] for i in ids], [b[i] for i in ids])
        row["changed"] = [i for i in ids if a[i] != b[i]]
        out["categories"][cat] = row
    for name, prefix in (("non_live", ""), ("live", "live_")):
        cs = [c for c in cats if c.startswith("live_") == (prefix == "live_")]
        a = {(r["id"]): r["correct"] for r in greedy if r["mode"] == "canonical" and r["category"] in cs}
        b = {(r["id"]): r["correct"] for r in greedy if r["mode"] == "longest" and r["category"] in cs}
        ids = sorted(set(a) & set(b))
        out[f"paired_{name}"] = paired([a[i] for i in ids], [b[i] for i in ids])
    cont = [r for r in records if r["kind"] == "continue" and "skipped" not in r]
    out["p_continue"] = {"cases": len(cont),
                         "skipped": sum(1 for r in records if r["kind"] == "continue" and "skipped" in r),
                         **{m: sum(r[m] for r in cont) / len(cont) if cont else None for m in MODES}}
    m = out["modes"]
    out["ratios"] = {
        "passes_per_output_token": m["canonical"]["passes_per_output_token"] / m["longest"]["passes_per_output_token"],
        "seconds_per_case": m["canonical"]["seconds_per_case"] / m["longest"]["seconds_per_case"],
    }
    return out


def table(s: dict, command: str) -> str:
    f = lambda x: "–" if x is None else f"{x:.3f}"
    m = s["modes"]
    lines = [f"Measured with `{command}` (greedy, SmolLM2-135M unless the command names another model; "
             "both rules on the same cases in one run).", "",
             "| | longest-match forcing (before) | canonical forcing (after) |", "| --- | ---: | ---: |"]
    for mode_key, label in (("canonical_share", "canonical share, live cases"),):
        lo, hi = m["longest"]["canonical_ci"], m["canonical"]["canonical_ci"]
        lines.append(f"| {label} (n={m['canonical']['live_cases']}) | {f(m['longest'][mode_key])} "
                     f"[{lo[0]:.2f}, {lo[1]:.2f}] | {f(m['canonical'][mode_key])} [{hi[0]:.2f}, {hi[1]:.2f}] |")
    pc = s["p_continue"]
    lines.append(f"| mean P(continue) after the first call, live parallel (n={pc['cases']}) | "
                 f"{f(pc['longest'])} | {f(pc['canonical'])} |")
    lines.append(f"| forward passes per output token | {f(m['longest']['passes_per_output_token'])} | "
                 f"{f(m['canonical']['passes_per_output_token'])} ({s['ratios']['passes_per_output_token']:.2f}x) |")
    lines.append(f"| wall time per case | 1.00x | {s['ratios']['seconds_per_case']:.2f}x |")
    lines += ["", "| category | n | accuracy before [95% CI] | accuracy after [95% CI] | calls/case before | "
              "calls/case after | only before / only after right (McNemar p) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cat, row in s["categories"].items():
        b, a, p = row["longest"], row["canonical"], row["paired"]
        lines.append(f"| {cat} | {a['n']} | {b['correct']}/{b['n']} = {f(b['acc'])} [{b['ci'][0]:.2f}, "
                     f"{b['ci'][1]:.2f}] | {a['correct']}/{a['n']} = {f(a['acc'])} [{a['ci'][0]:.2f}, "
                     f"{a['ci'][1]:.2f}] | {b['calls_per_case']:.2f} | {a['calls_per_case']:.2f} | "
                     f"{p['only_b']} / {p['only_a']} ({p['p']:.2f}) |")
    for name in ("live", "non_live"):
        p = s[f"paired_{name}"]
        lines.append(f"\n{name.replace('_', '-')} cases, paired: only longest-match right {p['only_b']}, only "
                     f"canonical right {p['only_a']}, McNemar exact p = {p['p']:.3f}.")
    if s.get("skipped"):
        lines.append(f"\nLeft out ({len(s['skipped'])}: a tool set the grammar refuses, or a generation "
                     "error in either rule): "
                     + "; ".join(s["skipped"]))
    changed = {c: row["changed"] for c, row in s["categories"].items() if row["changed"]}
    if changed:
        lines.append("\nCases whose verdict changed: " + "; ".join(f"{c}: {', '.join(v)}" for c, v in changed.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench canonical", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--live-scale", type=float, default=1.0,
                   help="scale the live sample (default 1: 120 live cases, all live parallel ones)")
    p.add_argument("--per-category", type=int, default=30, help="cases per non-live category (default 30)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--model", default=None)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each by default)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="out/canonical")
    p.add_argument("--readme", default=None, help="also put the table into this file's canonical-results block")
    a = p.parse_args(argv)
    if a.per_category < 0 or a.live_scale <= 0 or a.jobs < 1:
        raise ToolprmError("--per-category must be >= 0, --live-scale > 0 and --jobs >= 1")
    cases = [c for cat, k in LIVE.items() for c in load_cases(cat, max(1, round(k * a.live_scale)))]
    if a.per_category:
        cases += [c for cat in TEST_CATEGORIES for c in load_cases(cat, a.per_category)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    shards = [out / f"cases-{k}.jsonl" for k in range(a.jobs)]
    jobs = [(cases[k::a.jobs], str(shards[k]), a.max_new_tokens, a.model, k) for k in range(a.jobs)]
    if a.jobs == 1:
        _run_share(*jobs[0])
    else:
        run_jobs(_run_share, jobs, threads_per_job(a.jobs, a.threads))
    records = [r for s in shards for r in _read(s)]
    (out / "cases.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    publish(out, summarize(records), table, "toolprm bench canonical", argv, a.readme, "canonical-results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
