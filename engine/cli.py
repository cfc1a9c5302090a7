"""The ``toolprm`` command line."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from toolprm.engine.lean import DTYPES
from toolprm.errors import ToolprmError
from toolprm.grammar import CALL_MODES

from . import api, demo
from .explore import EXPLORATIONS, Exploration
from .search import AGGREGATIONS, DEFAULT_AGGREGATION, STRATEGIES

# Subcommands implemented elsewhere: (module, function taking argv) - imported lazily
# so `toolprm generate` does not pay for matplotlib or the training code.
DELEGATES = {
    ("bench", "grammar"): "toolprm.bench.grammar_bench",
    ("bench", "decode"): "toolprm.bench.decode_bench",
    ("bench", "bfcl"): "toolprm.bench.harness",
    ("bench", "report"): "toolprm.bench.report",
    ("bench", "scaling"): "toolprm.bench.scaling",
    ("bench", "first-step"): "toolprm.bench.first_step",
    ("bench", "canonical"): "toolprm.bench.canonical",
    ("bench", "ends"): "toolprm.bench.ends",
    ("bench", "ceiling"): "toolprm.bench.ceiling",
    ("bench", "compare"): "toolprm.bench.compare",
    ("bench", "bounds"): "toolprm.bench.bounds",
    ("bench", "serve"): "toolprm.bench.serve_bench",
    ("train", "data"): "toolprm.train.cli",
    ("train", "prm"): "toolprm.train.cli",
    ("train", "eval"): "toolprm.train.cli",
    ("train", "all"): "toolprm.train.cli",
    ("train", "siblings"): "toolprm.train.cli",
    ("train", "sets"): "toolprm.train.cli",
    ("train", "encoder"): "toolprm.train.cli",
    ("train", "generative"): "toolprm.train.cli",
    ("train", "readers"): "toolprm.train.cli",
    ("train", "calibrate"): "toolprm.train.cli",
    ("train", "ends"): "toolprm.train.cli",
}


def _generate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="toolprm generate", description="Call functions for a query.")
    p.add_argument("query", help="the user's request")
    p.add_argument("--tools", required=True, help="JSON file with a list of tool specs")
    p.add_argument("--model", default=None, help="model name or path (default: embedded SmolLM2-135M)")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="the policy's weights: auto (default; int4 on a CPU with AVX512-BF16 or AMX, "
                        "else float32), float32, bfloat16 or int4")
    p.add_argument("--strategy", default="fine_beam", choices=STRATEGIES)
    p.add_argument("--calls", default="any", choices=list(CALL_MODES))
    p.add_argument("-m", type=int, default=8, help="samples per beam per step (beam strategies)")
    p.add_argument("-n", type=int, default=2, help="beams kept / samples for best_of_n and majority")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--aggregation", default=DEFAULT_AGGREGATION, choices=AGGREGATIONS,
                   help="how a beam ranks partial outputs by their step scores (default "
                        f"{DEFAULT_AGGREGATION}: the PRM's product over the steps, per call; last: "
                        "the product, which favours short call lists; geomean: per step)")
    p.add_argument("--exploration", default="structured", choices=EXPLORATIONS,
                   help="fine_beam's candidates: structured (every discrete choice, samples plus "
                        "grounded proposals at free values; default) or sampling (m samples only)")
    p.add_argument("--top-k", type=int, default=Exploration.top_k,
                   help=f"discrete alternatives kept per step (default {Exploration.top_k})")
    p.add_argument("--proposals", type=int, default=Exploration.proposals,
                   help=f"grounded proposals kept per free-form value (default {Exploration.proposals})")
    p.add_argument("--distinct-values", action=argparse.BooleanOptionalAction, default=Exploration.distinct_values,
                   help="at a value step, drop a candidate that repeats another parameter's string in "
                        "the same call where a sibling does not (default: %(default)s)")
    p.add_argument("--close-values", action=argparse.BooleanOptionalAction, default=Exploration.close_values,
                   help="also offer closed each sampled value whose last token commits to another key "
                        "(default: %(default)s)")
    p.add_argument("--distinct-calls", action=argparse.BooleanOptionalAction, default=Exploration.distinct_calls,
                   help="drop a candidate that completes a copy of an earlier call where a sibling "
                        "completes a different one (default: %(default)s)")
    p.add_argument("--trace", action="store_true", help="print the steps and their scores to stderr")
    a = p.parse_args(argv)
    try:
        with open(a.tools) as f:
            tools = json.load(f)
    except (OSError, ValueError) as e:
        raise ToolprmError(f"cannot read tools from {a.tools}: {e}") from None
    r = api.generate(a.query, tools, model=a.model, dtype=a.dtype, strategy=a.strategy, calls=a.calls, m=a.m, n=a.n,
                     temperature=a.temperature, seed=a.seed, max_new_tokens=a.max_new_tokens,
                     aggregation=a.aggregation, exploration=a.exploration, top_k=a.top_k,
                     proposals=a.proposals, distinct_values=a.distinct_values,
                     close_values=a.close_values, distinct_calls=a.distinct_calls)
    if a.trace:
        print(api.format_trace(r.steps), file=sys.stderr)
        print(json.dumps(r.stats), file=sys.stderr)
    print(json.dumps(r.calls, ensure_ascii=False))
    return 0


def _serve(argv: list[str]) -> int:
    try:
        serve = importlib.import_module("toolprm.engine.serve")
    except ImportError as e:
        raise ToolprmError(f"toolprm serve needs the serve extra ({e.name} is missing): "
                           f"pip install 'toolprm[serve]'") from None
    return serve.main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: toolprm {generate,serve,demo,bench,train} ...\n"
             "  generate --tools FILE QUERY   call functions for a query\n"
             "  serve [--host H] [--port P]   an OpenAI-compatible chat-completions server\n"
             "  demo                          a short demonstration on the default model\n"
             "  bench {grammar,decode,bfcl,report,scaling,first-step,canonical,ceiling,compare,bounds,serve}\n"
             "  train {data,prm,eval,all,siblings,sets,encoder,generative,readers,calibrate,ends}\n")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if os.environ.get("TOOLPRM_THREADS"):
        import torch
        torch.set_num_threads(int(os.environ["TOOLPRM_THREADS"]))
    try:
        if cmd == "generate":
            return _generate(rest)
        if cmd == "demo":
            return demo.main(rest)
        if cmd == "serve":
            return _serve(rest)
        if cmd in ("bench", "train") and rest and (cmd, rest[0]) in DELEGATES:
            mod = importlib.import_module(DELEGATES[(cmd, rest[0])])
            return mod.main(rest[1:]) if cmd == "bench" else mod.main(rest)
        print(usage, file=sys.stderr)
        return 2
    except ToolprmError as e:
        print(f"toolprm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("toolprm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
