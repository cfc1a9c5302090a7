"""Sibling sets along a right answer, at scale, with no policy in the loop.

A reader that ranks siblings must see right and wrong siblings of one parent, many
times over. Policy walks (``train.siblings``) make such sets at about ten seconds
a query, so at scale the sets come from the grammar instead. For every usable live
query, and for function-masked variants of it (``masking.mask_case``), walk the
grammar along one right answer (``bfcl.ground_truth_calls``); at each step the
sibling set holds:

* at a discrete choice (``State.next_steps``: close the list or begin another call
  with each tool, each remaining key or close the arguments, each enum, boolean or
  null value), every alternative (at most ``max_alternatives``, the right ones kept);
* at a free-form value, the right value, the grounded proposals the search makes
  (``engine.explore.grounded``: numbers, quoted strings and spans of the query), and
  synthetic hard negatives: a value of another parameter or another call, a number
  off by one or in another unit, a list with an item dropped;

so "another tool", "closing too early", "one call too many" and, for irrelevant
queries, "any call" are all among them. Each candidate is labelled by
``labels.step_labels`` (BFCL's checker), so a perturbation that happens to be
acceptable is labelled right. What this misses: the policy's own sampled values;
the policy walks supply those where they are run.

Held-out queries (``bfcl.held_out``) are never used. Output, per worker shard:
``sets.jsonl`` (one sibling set a line) and ``queries.jsonl`` (each variant's
messages and normalized tools, which a text reader renders). Resumable.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from toolprm.bfcl import (KNOWN_UNSATISFIABLE, TRAIN_CATEGORIES, Case, assert_not_test, ground_truth_calls, held_out,
                          load_cases)
from toolprm.engine.explore import grounded, query_text
from toolprm.engine.models import get_policy
from toolprm.engine.workers import run_jobs
from toolprm.errors import InvalidTokenError, ToolprmError
from toolprm.grammar import State, StepEvent, compile, normalize_tools

from .labels import step_labels
from .masking import mask_case

SETS, QUERIES = "sets.jsonl", "queries.jsonl"
#: live_relevance has no answer key (any call passes), so it makes no labels.
CATEGORIES = TRAIN_CATEGORIES


def usable_cases(held: bool | str = False) -> list[Case]:
    """Every live case whose answer key is usable and that is not held out (with
    ``held``: only the held-out ones, for evaluation; ``held="nestful"``: the cases of
    another benchmark, ``bfcl.nestful``, a held-out check of generalisation)."""
    if held == "nestful":
        out = load_cases("nestful")
    else:
        out = [c for cat in CATEGORIES for c in load_cases(cat)
               if c.id not in KNOWN_UNSATISFIABLE and held_out(c.id) == held]
    assert_not_test(out)
    return out


def variants(case: Case, masked: int, seed: int) -> list[tuple[str, Case]]:
    """The case itself and ``masked`` function-masked copies, each with its own id."""
    rng = random.Random(f"{seed}:{case.id}")
    return [(case.id, case)] + [(f"{case.id}#mask{i}", mask_case(case, rng)[0]) for i in range(masked)]


# --- the walk ---------------------------------------------------------------

def _choices(state: State) -> list[bytes] | None:
    """The discrete continuations to the next step boundary; a number just written
    is completed by the delimiter each continuation begins with."""
    steps = state.next_steps()
    if steps is not None:
        return steps
    out = []
    for d in (b",", b"}", b"]"):
        try:
            after = state.advance_bytes(d)
        except InvalidTokenError:
            continue
        more = after.next_steps()
        if more is None:
            return None
        out += [d + m for m in more]
    return out or None


def _last(state: State, before: int, key: str | None = None, value: Any = None) -> StepEvent | None:
    """The step event a continuation ended with; for a number (complete only once a
    delimiter follows) the value event it will fire."""
    if len(state.events) > before:
        return state.events[-1]
    if key is None:
        return None
    call = state.events[-1].call if state.events else 0
    return StepEvent("value", call, key, json.dumps(value), value, len(state.text))


def _targets(answer: list[dict]) -> list[tuple]:
    out: list[tuple] = []
    for c in answer:
        out.append(("name", c["name"]))
        for k, v in c["arguments"].items():
            out += [("key", k), ("value", k, v)]
    return out + [("end",)]


def _is(ev: StepEvent, target: tuple) -> bool:
    if ev.kind != target[0]:
        return False
    if ev.kind == "name":
        return ev.value == target[1]
    if ev.kind == "key":
        return ev.key == target[1]
    if ev.kind == "value":
        return ev.key == target[1] and json.dumps(ev.value, sort_keys=True) == json.dumps(target[2], sort_keys=True)
    return True


def _negatives(value: Any, others: list[Any]) -> list[Any]:
    """Hard wrong values near a right one: other parameters' or calls' values, a
    number off by one or in another unit, a list with an item dropped or repeated."""
    out = list(others)
    if isinstance(value, bool):
        out.append(not value)
    elif isinstance(value, int):
        out += [value + 1, value - 1, value * 60, value * 1000, value // 60 if value >= 60 else value * 10]
    elif isinstance(value, float):
        out += [value + 1.0, round(value * 100, 6), round(value / 100, 6)]
    elif isinstance(value, list) and value:
        out += [value[:-1], value + value[-1:]]
    elif isinstance(value, str) and " " in value.strip():
        out += [value.split()[0], value.rsplit(None, 1)[0]]
    return out


def _glue(state: State) -> bytes:
    return b" " if state.raw.endswith(b":") else b"" if state.raw.endswith(b": ") else b": "


def walk(case: Case, grammar, rng: random.Random, *, max_alternatives: int = 12,
         max_proposals: int = 8) -> list[dict]:
    """The sibling sets along ``case``'s right answer (see the module docstring)."""
    answer = ground_truth_calls(case)
    values_by_call = [list(c["arguments"].values()) for c in answer]
    query = query_text(case.messages)
    state = grammar.start()
    sets = []
    for target in _targets(answer):
        n = len(state.events)
        cands: list[tuple[State, StepEvent]] = []
        if target[0] == "value" and _choices(state) is None:
            key, value = target[1], target[2]
            others = [v for i, vs in enumerate(values_by_call) for v in vs if v is not value]
            glue = _glue(state)
            props = grounded(state, query)
            rng.shuffle(props)
            seen: set[bytes] = set()
            options = ([glue + json.dumps(value, ensure_ascii=False).encode()] + props[:max_proposals]
                       + [glue + json.dumps(v, ensure_ascii=False).encode()
                          for v in _negatives(value, [o for o in others if o != value])])
            for data in options:
                if data in seen:
                    continue
                seen.add(data)
                try:
                    st = state.advance_bytes(data)
                except InvalidTokenError:
                    continue
                try:
                    v = json.loads(data[len(glue):])
                except ValueError:
                    continue
                cands.append((st, _last(st, n, key, v)))
        else:
            steps = _choices(state)
            if steps is None:
                return sets       # a free-form value where the answer has none: stop here
            for d in steps:
                st = state.advance_bytes(d)
                cands.append((st, st.events[-1]))
        gold = [i for i, (_, ev) in enumerate(cands) if ev is not None and _is(ev, target)]
        if not gold:
            return sets           # the answer cannot be written here (a schema it breaks)
        g = gold[0]
        rest = [i for i in range(len(cands)) if i != g]
        rng.shuffle(rest)
        keep = sorted([g] + rest[:max_alternatives - 1])
        records = []
        for i in keep:
            st, ev = cands[i]
            events = list(st.events[:n]) + ([ev] if len(st.events) == n else list(st.events[n:]))
            records.append({"text": st.text, "kind": ev.kind, "label": int(step_labels(case, events)[-1]),
                            "events": [[e.kind, e.call, e.key, e.value] for e in events]})
        if len(records) > 1:
            sets.append({"parent": state.text, "candidates": records})
        state = cands[g][0]
    return sets


# --- the run ------------------------------------------------------------------

def _done(path: Path) -> set[str]:
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                done.add(json.loads(line)["id"])
            except (ValueError, KeyError):
                continue
    return done


def build_share(out: str, masked: int, seed: int, share: tuple[int, int], limit: int | None,
                progress: bool, held: bool | str = False) -> dict:
    """One worker: the queries ``k, k + j, ...`` of ``usable_cases(held)`` into ``out``."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = get_policy().tokenizer
    cases = usable_cases(held)[:limit]
    mine = [c for i, c in enumerate(cases) if i % share[1] == share[0]]
    done = _done(out_dir / QUERIES)
    skipped: dict[str, int] = {}
    t0 = time.perf_counter()
    with open(out_dir / SETS, "a") as sf, open(out_dir / QUERIES, "a") as qf:
        bar = tqdm(mine, desc=f"gold sets {share[0] + 1}/{share[1]}", unit="query", disable=not progress,
                   position=share[0], mininterval=5)
        for base in bar:
            for vid, case in variants(base, masked, seed):
                if vid in done:
                    continue
                try:
                    norm = normalize_tools(case.tools)
                    grammar = compile(norm, tokenizer, calls="any")
                    sets = walk(case, grammar, random.Random(f"{seed}:{vid}"))
                except ToolprmError as e:   # a schema the grammar refuses: no search runs on it either
                    skipped[type(e).__name__] = skipped.get(type(e).__name__, 0) + 1
                    sets = []
                for s in sets:
                    sf.write(json.dumps({"query": vid, "base": base.id, "category": case.category,
                                         "masked": vid != base.id, **s}, ensure_ascii=False) + "\n")
                sf.flush()
                # written after its sets: a query listed here is complete (resume skips it)
                qf.write(json.dumps({"id": vid, "base": base.id, "category": case.category,
                                     "masked": vid != base.id, "sets": len(sets),
                                     "messages": case.messages, "tools": [t.spec() for t in norm]
                                     if sets else []}, ensure_ascii=False) + "\n")
                qf.flush()
    return {"skipped": skipped, "seconds": round(time.perf_counter() - t0, 1)}


def build(out: str | Path, *, masked: int = 2, seed: int = 0, jobs: int = 1, limit: int | None = None,
          progress: bool = True, command: str = "", held: bool | str = False) -> dict:
    """Sibling sets of every usable live query and ``masked`` masked copies of each,
    in ``out/shard-K`` for ``jobs`` workers; ``meta.json`` sums them up. ``held``:
    the held-out queries instead (evaluation data, never trained on)."""
    if jobs < 1 or masked < 0:
        raise ToolprmError("--jobs must be positive and --masked non-negative")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    args = [(str(out / f"shard-{k}"), masked, seed, (k, jobs), limit, progress, held) for k in range(jobs)]
    metas = run_jobs(build_share, args, 1) if jobs > 1 else [build_share(*args[0])]
    meta = {"command": command, "held_out": held, "masked_per_query": masked, "seed": seed, "jobs": jobs,
            "skipped": {}, "seconds": max(m["seconds"] for m in metas)}
    for m in metas:
        for k, v in m["skipped"].items():
            meta["skipped"][k] = meta["skipped"].get(k, 0) + v
    meta.update(count(out))
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def shards(out: str | Path) -> list[Path]:
    found = sorted(Path(out).glob("shard-*"), key=lambda p: int(p.name.split("-")[1]))
    if not found:
        raise ToolprmError(f"no sibling-set shards (shard-K folders) under {out}; run `toolprm train sets` first")
    return found


def read_sets(out: str | Path):
    for shard in shards(out):
        with open(shard / SETS) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def read_queries(out: str | Path) -> dict[str, dict]:
    q = {}
    for shard in shards(out):
        for line in (shard / QUERIES).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                q[r["id"]] = r
    return q


def count(out: str | Path) -> dict:
    sets = cands = pos = mixed = masked = 0
    queries: set[str] = set()
    for s in read_sets(out):
        ys = [c["label"] for c in s["candidates"]]
        sets += 1
        cands += len(ys)
        pos += sum(ys)
        mixed += 0 < sum(ys) < len(ys)
        masked += s["masked"]
        queries.add(s["query"])
    return {"queries": len(queries), "sets": sets, "candidates": cands, "sets_right_and_wrong": mixed,
            "positive_rate": round(pos / cands, 4) if cands else None,
            "masked_share_of_sets": round(masked / sets, 4) if sets else None}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shlex
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="toolprm train sets", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/prm2/sets", help="data folder (shard-K inside)")
    p.add_argument("--masked", type=int, default=2, help="function-masked copies per query")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (resume with the same --jobs)")
    p.add_argument("--limit", type=int, default=None, help="only the first N usable queries")
    p.add_argument("--held-out", action="store_true",
                   help="the held-out live queries instead: evaluation sets no reader trains on")
    p.add_argument("--nestful", action="store_true",
                   help="NESTFUL's single-turn samples instead (bfcl.nestful): a held-out check on another "
                        "benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.nestful and a.held_out:
        raise ToolprmError("--held-out and --nestful are two different evaluation sources; pick one")
    meta = build(a.out, masked=a.masked, seed=a.seed, jobs=a.jobs, limit=a.limit, progress=not a.no_progress,
                 held="nestful" if a.nestful else a.held_out,
                 command="toolprm train sets " + " ".join(shlex.quote(x) for x in argv))
    print(json.dumps(meta, indent=1))
    return 0


__all__ = ["main", "build", "walk", "variants", "usable_cases", "read_sets", "read_queries", "count"]
