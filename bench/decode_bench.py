"""`toolprm bench decode`: decoding speed by runtime and dtype, as ratios to the fp32
transformers path, all in one run.

Configurations, on the same model and the same BFCL simple_python prompts (the
test category's prompts; nothing is tuned on them), interleaved prompt by prompt
so that drift in the machine's speed hits all of them alike:

- ``transformers/float32``: the decoding loop over transformers' own forward and
  KV cache (a copy of the prompt per row): the path before the lean runtime, and
  the baseline of every ratio;
- ``lean/float32``, ``lean/bfloat16``, ``lean/int4`` (``engine.lean``).

Measures: prefill tokens/s (cold: no kept prompt to begin from); the time of one decoding step (one token per row,
over the prompt's cache) at batch 1, 8 and 16 (median); wall time per case of
greedy and of fine_beam(m=4, n=2) with the shipped PRM (as a user runs them,
consecutive cases: the lean runtime reuses the shared system preamble); and at fine_beam(m=8,
n=4) the KV-cache bytes written per forward pass and the most bytes the cache
held. The default dtype's prefill and batch-1 step are also timed at each of
``--thread-counts``. Printed as a table (``--readme`` writes it into a README
block), never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from toolprm.bench.report import replace_block
from toolprm.bfcl import load_cases
from toolprm.engine.api import generate
from toolprm.engine.lean import resolve_dtype
from toolprm.engine.models import get_policy, make_policy
from toolprm.engine.query import prepare
from toolprm.engine.runners import runner_for

BASE = "transformers/float32"
BATCHES = (1, 8, 16)


def _configs(policy) -> dict:
    model, tok = policy.model, policy.tokenizer
    out = {BASE: make_policy(model, tok, policy.name, "float32", lean=False)}
    for d in ("float32", "bfloat16", "int4"):
        out[f"lean/{d}"] = make_policy(model, tok, policy.name, d)
    return out


def _time_prompt(runtime, ids: list[int], steps: int) -> tuple[float, dict[int, float]]:
    """Prefill seconds (cold: the lean runtime's kept prompt dropped first), and the
    median seconds of a one-token step per batch size."""
    if hasattr(runtime, "forget"):
        runtime.forget()
    t0 = time.perf_counter()
    runner = runner_for(runtime, ids, False)
    prefill = time.perf_counter() - t0
    step = {}
    at = len(ids)
    for b in BATCHES:  # the same cache, forked from its first row (8 more tokens per size)
        runner.select(torch.zeros(b, dtype=torch.long))
        times = []
        for _ in range(steps):
            x = torch.randint(100, 20000, (b, 1))
            t0 = time.perf_counter()
            runner.feed(x, torch.ones(b, 1, dtype=torch.bool), torch.full((b, 1), at))
            times.append(time.perf_counter() - t0)
            at += 1
        step[b] = statistics.median(times)
    return prefill, step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=6, help="prompts for the prefill and step timings")
    p.add_argument("--steps", type=int, default=8, help="timed steps per prompt and batch size")
    p.add_argument("--cases", type=int, default=8, help="cases for the greedy and fine_beam wall times")
    p.add_argument("--beam-cases", type=int, default=3, help="of those, cases for fine_beam")
    p.add_argument("--thread-counts", default=None,
                   help="comma-separated torch thread counts for the default dtype (default: 1 and "
                        "all cores)")
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--readme", default=None, help="write the table into this README (block decode-results)")
    a = p.parse_args(argv)
    threads = torch.get_num_threads()
    policy = get_policy(a.model, dtype="float32")
    configs = _configs(policy)
    default = f"lean/{resolve_dtype('auto')}"
    cases = load_cases("simple_python", max(a.prompts, a.cases))
    prompts = [prepare(policy.tokenizer, c.messages, c.tools).prompt_ids for c in cases]
    fig: dict[str, dict] = {name: {"prefill_s": 0.0, "prefill_tokens": 0, "step_s": {b: [] for b in BATCHES},
                                   "greedy_s": [], "beam_s": []} for name in configs}
    for ids in tqdm(prompts[:a.prompts], desc="prefill and steps", unit="prompt"):
        for name, pol in configs.items():
            pre, step = _time_prompt(pol.runtime, ids, a.steps)
            fig[name]["prefill_s"] += pre
            fig[name]["prefill_tokens"] += len(ids)
            for b in BATCHES:
                fig[name]["step_s"][b].append(step[b])
    default_stats = {"generated": 0, "forced": 0, "passes": 0, "grammar_s": 0.0, "forward_s": 0.0}
    for i, case in enumerate(tqdm(cases[:a.cases], desc="greedy and fine_beam", unit="case")):
        for name, pol in configs.items():
            r = generate(case.messages, case.tools, model=pol, strategy="greedy", calls="any")
            fig[name]["greedy_s"].append(r.stats["seconds"])
            if name == default:
                default_stats["generated"] += r.stats["generated_tokens"]
                default_stats["forced"] += r.stats["forced_tokens"]
                default_stats["passes"] += r.stats["forward_passes"] - 1
                default_stats["grammar_s"] += r.stats["grammar_seconds"]
                default_stats["forward_s"] += r.stats["forward_seconds"]
            if i < a.beam_cases:
                r = generate(case.messages, case.tools, model=pol, strategy="fine_beam", m=4, n=2)
                fig[name]["beam_s"].append(r.stats["seconds"])
    kv = {}
    for name in (BASE, default):
        r = generate(cases[0].messages, cases[0].tools, model=configs[name], strategy="fine_beam", m=8, n=4)
        kv[name] = {"written_per_pass": r.stats["kv_written_bytes"] / r.stats["forward_passes"],
                    "peak": r.stats["kv_peak_bytes"]}
    thread_rows = []
    counts = [int(x) for x in a.thread_counts.split(",")] if a.thread_counts else sorted({1, _cores()})
    for n in counts:
        torch.set_num_threads(n)
        pre = tok = 0.0
        steps = []
        for ids in prompts[:a.prompts]:
            t, s = _time_prompt(configs[default].runtime, ids, a.steps)
            pre += t
            tok += len(ids)
            steps.append(s[1])
        thread_rows.append((n, tok / pre, statistics.median(steps)))
    torch.set_num_threads(threads)

    summary = _summarize(fig, kv, default, default_stats)
    cmd = "toolprm bench decode " + shlex.join(sys.argv[2:] if argv is None else argv)
    table = _table(summary, default, thread_rows, cmd.strip(), threads, len(prompts[:a.prompts]),
                   statistics.median(len(x) for x in prompts[:a.prompts]), a)
    print(table)
    if a.out:
        Path(a.out).write_text(json.dumps({"summary": summary, "threads": thread_rows, "command": cmd},
                                          indent=2))
    if a.readme:
        replace_block(Path(a.readme), "decode-results", table)
    return 0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _summarize(fig: dict, kv: dict, default: str, ds: dict) -> dict:
    out = {}
    for name, f in fig.items():
        out[name] = {
            "prefill_tok_s": f["prefill_tokens"] / f["prefill_s"],
            **{f"step_ms_b{b}": 1000 * statistics.median(f["step_s"][b]) for b in BATCHES},
            "greedy_s_case": statistics.mean(f["greedy_s"]),
            "beam_s_case": statistics.mean(f["beam_s"]) if f["beam_s"] else None,
        }
        if name in kv:
            out[name]["kv_written_per_pass"] = kv[name]["written_per_pass"]
            out[name]["kv_peak"] = kv[name]["peak"]
    out["_default"] = {"config": default, "forced_share": ds["forced"] / max(1, ds["forced"] + ds["generated"]),
                       "passes_per_output_token": ds["passes"] / max(1, ds["forced"] + ds["generated"]),
                       "grammar_over_forward": ds["grammar_s"] / max(1e-9, ds["forward_s"])}
    return out


def _table(s: dict, default: str, thread_rows, cmd: str, threads: int, n_prompts: int, median_len,
           a) -> str:
    base = s[BASE]
    names = [n for n in s if not n.startswith("_")]

    def ratio(name, key, inverse=False):
        v, b = s[name].get(key), base.get(key)
        if v is None or b is None:
            return "n/a"
        return f"{(b / v if inverse else v / b):.2f}"

    lines = [f"Written by `{cmd}` ({torch.get_num_threads() if threads is None else threads} torch "
             f"thread(s), {n_prompts} simple_python prompts of median {median_len:.0f} tokens, "
             f"{a.steps} steps each; {a.cases} cases greedy, {a.beam_cases} fine_beam(m=4,n=2) with the "
             f"shipped PRM). Ratios are to `{BASE}` in the same run: time ratios (lower is faster), "
             f"except prefill (speed-up, higher is faster). Default here: `{default}`.", "",
             "| | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    lines.append("| prefill tok/s (speed-up) | " + " | ".join(
        f"{s[n]['prefill_tok_s']:.0f} ({ratio(n, 'prefill_tok_s')}x)" for n in names) + " |")
    for b in BATCHES:
        lines.append(f"| step, batch {b}: ms (ratio) | " + " | ".join(
            f"{s[n][f'step_ms_b{b}']:.1f} ({ratio(n, f'step_ms_b{b}')})" for n in names) + " |")
    lines.append("| greedy, s per case (ratio) | " + " | ".join(
        f"{s[n]['greedy_s_case']:.2f} ({ratio(n, 'greedy_s_case')})" for n in names) + " |")
    lines.append("| fine_beam(4,2), s per case (ratio) | " + " | ".join(
        "n/a" if s[n]["beam_s_case"] is None else f"{s[n]['beam_s_case']:.2f} ({ratio(n, 'beam_s_case')})"
        for n in names) + " |")
    lines.append("")
    lines.append(f"KV cache at fine_beam(m=8,n=4) on one case: `{BASE}` writes "
                 f"{base['kv_written_per_pass'] / 2**20:.1f} MiB per forward pass and holds at most "
                 f"{base['kv_peak'] / 2**20:.1f} MiB; `{default}` writes "
                 f"{s[default]['kv_written_per_pass'] / 2**20:.2f} MiB "
                 f"({ratio(default, 'kv_written_per_pass')}) and holds at most "
                 f"{s[default]['kv_peak'] / 2**20:.1f} MiB ({ratio(default, 'kv_peak')}).")
    d = s["_default"]
    lines.append(f"`{default}` greedy: {d['forced_share']:.1%} of output tokens forced by jump-forward, "
                 f"{d['passes_per_output_token']:.3f} forward passes per output token, grammar time "
                 f"{d['grammar_over_forward']:.2%} of forward time.")
    lines.append("")
    lines.append(f"Threads, `{default}`: " + "; ".join(
        f"{n} thread(s): prefill {tps:.0f} tok/s, batch-1 step {1000 * st:.1f} ms" for n, tps, st in thread_rows)
        + ".")
    return "\n".join(lines)
