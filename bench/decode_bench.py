"""`toolprm bench decode`: the decoding loop against transformers' own generate.

On BFCL simple_python cases (the test category's prompts; nothing is tuned on
them), in one run and on one model:
- greedy: our constrained loop's tokens/s against plain `model.generate` greedy on
  the same prompts (ratio), the share of tokens forced by jump-forward, forward
  passes per output token, and grammar time as a fraction of forward time;
- fine_beam (M x N rows): output tokens/s summed over rows, against plain batched
  sampling of M x N sequences with `model.generate` on the same prompts (ratio).
Printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from tqdm import tqdm

from toolprm.bfcl import load_cases
from toolprm.engine.api import generate
from toolprm.engine.models import get_policy
from toolprm.engine.query import prepare


@torch.inference_mode()
def _hf_generate(policy, prompt_ids, rows: int, max_new_tokens: int, sample: bool) -> tuple[int, float]:
    ids = torch.tensor([prompt_ids] * rows)
    t0 = time.perf_counter()
    out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=sample, temperature=0.8 if sample else None, top_p=None,
                                top_k=None, pad_token_id=policy.tokenizer.eos_token_id)
    dt = time.perf_counter() - t0
    eos = policy.tokenizer.eos_token_id
    n = 0
    for row in out[:, len(prompt_ids):].tolist():
        n += row.index(eos) if eos in row else len(row)
    return n, dt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toolprm bench decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=50, help="number of simple_python cases (default 50)")
    p.add_argument("--beam-cases", type=int, default=10, help="cases for the fine_beam comparison")
    p.add_argument("-m", type=int, default=8)
    p.add_argument("-n", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    policy = get_policy(a.model)
    cases = load_cases("simple_python", limit=a.limit)
    g = {"ours_tokens": 0, "ours_s": 0.0, "hf_tokens": 0, "hf_s": 0.0, "forced": 0, "passes": 0,
         "grammar_s": 0.0, "forward_s": 0.0}
    per_step_us = []
    for case in tqdm(cases, desc="greedy vs generate", unit="case"):
        r = generate(case.messages, case.tools, model=policy, strategy="greedy", calls="any",
                     max_new_tokens=a.max_new_tokens)
        st = r.stats
        out_tokens = st["generated_tokens"] + st["forced_tokens"]
        g["ours_tokens"] += out_tokens
        g["ours_s"] += st["seconds"]
        g["forced"] += st["forced_tokens"]
        g["passes"] += st["forward_passes"] - 1  # the prefill is not a decoding pass
        g["grammar_s"] += st["grammar_seconds"]
        g["forward_s"] += st["forward_seconds"]
        per_step_us.append(1e6 * st["grammar_seconds"] / max(1, out_tokens))
        ids = prepare(policy.tokenizer, case.messages, case.tools).prompt_ids
        n, dt = _hf_generate(policy, ids, 1, a.max_new_tokens, sample=False)
        g["hf_tokens"] += n
        g["hf_s"] += dt
    rows = a.m * a.n
    b = {"ours_tokens": 0, "ours_s": 0.0, "hf_tokens": 0, "hf_s": 0.0}
    for case in tqdm(cases[:a.beam_cases], desc=f"fine_beam M={a.m} N={a.n} vs sampling {rows}",
                     unit="case"):
        r = generate(case.messages, case.tools, model=policy, strategy="fine_beam", m=a.m, n=a.n,
                     max_new_tokens=a.max_new_tokens)
        b["ours_tokens"] += r.stats["generated_tokens"] + r.stats["forced_tokens"]
        b["ours_s"] += r.stats["seconds"]
        ids = prepare(policy.tokenizer, case.messages, case.tools).prompt_ids
        n, dt = _hf_generate(policy, ids, rows, a.max_new_tokens, sample=True)
        b["hf_tokens"] += n
        b["hf_s"] += dt
    ours_tps = g["ours_tokens"] / g["ours_s"]
    hf_tps = g["hf_tokens"] / g["hf_s"]
    fig = {
        "cases": len(cases), "model": policy.name, "max_new_tokens": a.max_new_tokens,
        "greedy_tokens_per_s": round(ours_tps, 2), "generate_tokens_per_s": round(hf_tps, 2),
        "greedy_speed_ratio": round(ours_tps / hf_tps, 3),
        "forced_share": round(g["forced"] / g["ours_tokens"], 3),
        "forward_passes_per_output_token": round(g["passes"] / g["ours_tokens"], 3),
        "grammar_over_forward": round(g["grammar_s"] / g["forward_s"], 4),
        "grammar_us_per_token_median": round(statistics.median(per_step_us), 1),
        "beam_cases": min(a.beam_cases, len(cases)), "beam_rows": rows,
        "fine_beam_tokens_per_s": round(b["ours_tokens"] / b["ours_s"], 2),
        "sampling_tokens_per_s": round(b["hf_tokens"] / b["hf_s"], 2),
        "fine_beam_throughput_ratio": round((b["ours_tokens"] / b["ours_s"]) / (b["hf_tokens"] / b["hf_s"]), 3),
    }
    print(f"\n## toolprm bench decode ({fig['cases']} simple_python cases, {fig['model']}, CPU threads "
          f"{torch.get_num_threads()})\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| greedy tokens/s, ours / transformers generate | {fig['greedy_tokens_per_s']} / "
          f"{fig['generate_tokens_per_s']} = **{fig['greedy_speed_ratio']}x** | |")
    print(f"| tokens forced by jump-forward | {fig['forced_share']:.1%} | |")
    print(f"| forward passes per output token | {fig['forward_passes_per_output_token']} | <= 0.6 |")
    print(f"| grammar time / forward time | {fig['grammar_over_forward']:.2%} | < 2% |")
    print(f"| grammar time per output token (median) | {fig['grammar_us_per_token_median']} us | |")
    print(f"| fine_beam M={a.m} N={a.n} tokens/s / sampling {rows} sequences | "
          f"{fig['fine_beam_tokens_per_s']} / {fig['sampling_tokens_per_s']} = "
          f"**{fig['fine_beam_throughput_ratio']}x** | >= 0.8 |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(fig, f, indent=2)
    return 0
