"""Step-labelled PRM data from rollouts on BFCL's live (training) categories.

Layout of a data folder (default ``out/prm/data``)::

    meta.json       settings, hidden size, counts, label balance, timings
    queries.jsonl   one line per query: id, category, masked, split, messages, tools, ground_truth
    steps.jsonl     one line per step: query id, split, rollout, step index, kind, call, key,
                    step text, partial output, label, sampled tokens, step log-prob, position
    hidden.f32      the policy's last-layer hidden state at each step (row i = line i of
                    steps.jsonl), raw float32, shape (n_steps, hidden size)

The split is by query: every rollout and step of a query is in ``train`` or
``val`` (a stable hash of the query id), never both.  Writing is incremental and
``resume=True`` continues an interrupted run.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from toolprm.bfcl import KNOWN_UNSATISFIABLE, TRAIN_CATEGORIES, Case, assert_not_test, load_cases, split_of
from toolprm.engine.models import get_policy
from toolprm.engine.query import Query, prepare
from toolprm.engine.workers import run_jobs, threads_per_job
from toolprm.errors import ToolprmError

from .labels import label_balance, step_labels
from .masking import mask_case
from .rollout import rollouts

#: Share of the queries taken from each live category (live_parallel* are small: all of them fit).
DEFAULT_MIX = {"live_simple": 0.34, "live_multiple": 0.34, "live_parallel": 0.06,
               "live_parallel_multiple": 0.06, "live_irrelevance": 0.20}


@dataclass
class DataConfig:
    queries: int = 240             # queries in all (split into train / val by query)
    rollouts: int = 4              # samples per query
    empty_rollout: bool = True     # and one more that answers [] (the decision to call nothing)
    temperature: float = 0.8
    mask_share: float = 0.5        # share of queries whose names are masked
    val_share: float = 0.2
    seed: int = 0
    max_prompt_tokens: int = 1400  # longer prompts are skipped (CPU budget)
    max_new_tokens: int = 128
    max_step_tokens: int = 32      # a rollout whose step runs longer is cut there
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    model: str | None = None       # policy (None: the default SmolLM2)
    dtype: str = "float32"         # the policy's weights (engine.lean); data before the option were float32
    order_basis: int = 160         # the query order is built for this many (see pick_cases)


def pick_cases(cfg: DataConfig) -> list[Case]:
    """Live cases in a seeded random order per category, interleaved by the mix.

    The interleaving is built for ``max(cfg.queries, cfg.order_basis)`` queries
    (each category's quota by the mix, round-robin until a quota is used up) and
    the first ``cfg.queries`` are returned, so a smaller run is a prefix of a
    larger one: the same queries, with the same seeds."""
    rng = random.Random(cfg.seed)
    pools = {}
    for cat, share in cfg.mix.items():
        if cat not in TRAIN_CATEGORIES:
            raise ToolprmError(f"PRM data may only come from the live categories, not {cat!r}")
        cases = [c for c in load_cases(cat) if c.id not in KNOWN_UNSATISFIABLE]
        rng.shuffle(cases)
        pools[cat] = cases
    total = sum(cfg.mix.values())
    basis = max(cfg.queries, cfg.order_basis)
    want = {cat: max(1, round(basis * s / total)) for cat, s in cfg.mix.items()}
    out: list[Case] = []
    # Round-robin so that a run cut short still has every category.
    iters = {cat: iter(pools[cat]) for cat in pools}
    taken = {cat: 0 for cat in pools}
    while any(taken[c] < want[c] for c in pools):
        progressed = False
        for cat in pools:
            if taken[cat] < want[cat]:
                c = next(iters[cat], None)
                if c is None:
                    want[cat] = taken[cat]
                    continue
                out.append(c)
                taken[cat] += 1
                progressed = True
        if not progressed:
            break
    out = out[:cfg.queries]
    assert_not_test(out)
    return out


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def build(out_dir: str | os.PathLike, cfg: DataConfig, *, resume: bool = False,
          progress: bool = True, policy=None, command: str = "", jobs: int = 1,
          threads: int | None = None, share: tuple[int, int] = (0, 1), address: str | None = None) -> dict:
    """Roll out, label and write the data; returns the meta dict (also in meta.json).

    ``jobs`` > 1: that many Ray workers (``threads`` torch threads each; a local
    cluster, or the one at ``address``, whose machines share ``out_dir``), each
    on an interleaved share of the queries in ``out_dir/shard-K``, merged in query
    order; every query has its own seed, so the data are those of one process (up
    to float rounding in the last digits).
    ``share=(k, j)``: only the queries ``k, k + j, k + 2j, ...`` (one worker's)."""
    if jobs > 1:
        return _build_parallel(Path(out_dir), cfg, resume, progress, command, jobs, threads, address)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = policy or get_policy(cfg.model, dtype=cfg.dtype)
    d = policy.model.config.hidden_size
    done, n_steps = _start_files(out, d, resume)
    mine = [(qi, c) for qi, c in enumerate(pick_cases(cfg)) if qi % share[1] == share[0]]
    (out / "meta.json").write_text(json.dumps({"config": asdict(cfg), "command": command,
                                               "hidden_size": d, "complete": False}, indent=2))
    t_start = time.perf_counter()
    skipped: dict[str, int] = {}
    timings: list[float] = []
    with open(out / QUERIES, "a") as qf, open(out / STEPS, "a") as sf, open(out / HIDDEN, "ab") as hf:
        bar = tqdm(mine, desc="rollouts" if share[1] == 1 else f"rollouts {share[0] + 1}/{share[1]}",
                   unit="query", disable=not progress, position=share[0])
        for qi, base in bar:
            rng = random.Random(f"{cfg.seed}:{base.id}")
            masked = rng.random() < cfg.mask_share
            case, _ = mask_case(base, rng) if masked else (base, None)
            key = f"{case.id}{'#masked' if masked else ''}"
            if key in done:
                continue
            t0 = time.perf_counter()
            rolled = _roll_out(policy, cfg, case, qi)
            if isinstance(rolled, str):
                skipped[rolled] = skipped.get(rolled, 0) + 1
                continue
            timings.append(time.perf_counter() - t0)
            n_steps += _write_query(qf, sf, hf, cfg, case, key, masked, *rolled)
            bar.set_postfix(steps=n_steps)
    return _write_meta(out, cfg, command, d, skipped, time.perf_counter() - t_start,
                       [round(t, 3) for t in timings])


QUERIES, STEPS, HIDDEN = "queries.jsonl", "steps.jsonl", "hidden.f32"


def _start_files(out: Path, d: int, resume: bool) -> tuple[set[str], int]:
    """Empty the data files, or with ``resume`` keep the queries that were finished
    (queries.jsonl is written last) and drop the rest: (finished query keys, steps kept)."""
    qpath, spath, hpath = out / QUERIES, out / STEPS, out / HIDDEN
    if not (resume and qpath.exists() and spath.exists() and hpath.exists()):
        for p in (qpath, spath, hpath):
            if p.exists():
                p.unlink()
        return set(), 0
    qs = _json_lines_until_broken(qpath.read_text())
    done = {q["key"] for q in qs}
    keep = []
    for line, r in zip(_lines(spath.read_text()), _json_lines_until_broken(spath.read_text())):
        if r["query"] not in done:
            break
        keep.append(line)
    raw = np.fromfile(hpath, dtype=np.float32)
    if raw.size < len(keep) * d:
        raise ToolprmError(f"{out}: hidden.f32 is shorter than steps.jsonl; rerun without --resume")
    qpath.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in qs))
    spath.write_text("".join(line + "\n" for line in keep))
    raw[: len(keep) * d].tofile(hpath)
    return done, len(keep)


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def _json_lines_until_broken(text: str) -> list[dict]:
    """The JSON lines of ``text`` up to the first that does not parse (a line cut short
    by an interrupted run)."""
    out = []
    for line in _lines(text):
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def _roll_out(policy, cfg: DataConfig, case: Case, qi: int):
    """(query, rollouts) for one case, or the reason it is skipped."""
    try:
        query = prepare(policy.tokenizer, case.messages, case.tools)
    except ToolprmError:
        return "schema"
    if len(query.prompt_ids) > cfg.max_prompt_tokens:
        return "long_prompt"
    try:
        return query, rollouts(policy, query, cfg.rollouts, temperature=cfg.temperature,
                               seed=cfg.seed * 100003 + qi, max_new_tokens=cfg.max_new_tokens,
                               max_step_tokens=cfg.max_step_tokens, empty=cfg.empty_rollout)
    except ToolprmError:
        return "generation"


def _write_query(qf, sf, hf, cfg: DataConfig, case: Case, key: str, masked: bool, query: Query,
                 rolls: list) -> int:
    """Label one query's rollouts and append them to the data files; returns the steps written."""
    split = split_of(case.id, cfg.val_share, cfg.seed)
    n = 0
    for r, roll in enumerate(rolls):
        labels = step_labels(case, roll.steps)
        for i, (st, y) in enumerate(zip(roll.steps, labels)):
            sf.write(json.dumps({
                "query": key, "query_id": case.id, "category": case.category, "split": split,
                "masked": masked, "rollout": r, "step": i, "n_steps": len(roll.steps),
                "kind": st.kind, "call": st.call, "key": st.key, "text": st.text,
                "partial": roll.text[:st.offset], "label": int(y), "sampled": st.sampled,
                "logprob": round(st.logprob, 5), "position": st.position,
                "complete": roll.calls is not None}, ensure_ascii=False) + "\n")
        if len(roll.steps):
            hf.write(np.ascontiguousarray(roll.hidden, dtype=np.float32).tobytes())
        n += len(roll.steps)
    qf.write(json.dumps({"key": key, "id": case.id, "category": case.category, "masked": masked,
                         "split": split, "prompt_tokens": len(query.prompt_ids),
                         "messages": case.messages, "tools": _jsonable(case.tools),
                         "ground_truth": _jsonable(case.ground_truth),
                         "outputs": [r.text for r in rolls]}, ensure_ascii=False) + "\n")
    for f in (qf, sf, hf):
        f.flush()
    return n


def _write_meta(out: Path, cfg: DataConfig, command: str, d: int, skipped: dict, seconds: float,
                timings: list[float]) -> dict:
    records = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines() if l.strip()]
    meta = {
        "config": asdict(cfg), "command": command, "hidden_size": d, "complete": True, "n_steps": len(records),
        "n_queries": len({r["query"] for r in records}),
        "splits": {s: {"queries": len({r["query"] for r in records if r["split"] == s}),
                       "steps": sum(1 for r in records if r["split"] == s)} for s in ("train", "val")},
        "categories": {c: len({r["query"] for r in records if r["category"] == c})
                       for c in sorted({r["category"] for r in records})},
        "label_balance": label_balance(records),
        "skipped": skipped,
        "seconds": round(seconds, 1),
        "seconds_per_query": round(float(np.mean(timings)), 2) if timings else None,
        "query_seconds": timings,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _build_share(out: str, cfg: DataConfig, resume: bool, progress: bool, command: str,
                 share: tuple[int, int]) -> dict:
    return build(out, cfg, resume=resume, progress=progress, command=command, share=share)


def _build_parallel(out: Path, cfg: DataConfig, resume: bool, progress: bool, command: str,
                    jobs: int, threads: int | None, address: str | None = None) -> dict:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    shards = [out / f"shard-{k}" for k in range(jobs)]
    metas = run_jobs(_build_share, [(str(shards[k]), cfg, resume, progress, command, (k, jobs))
                                    for k in range(jobs)], threads_per_job(jobs, threads), address)
    # Merge in query order: each shard holds whole queries, its steps contiguous per query.
    d = metas[0]["hidden_size"]
    order = {c.id: i for i, c in enumerate(pick_cases(cfg))}
    parts = []
    for shard in shards:
        queries = [l for l in (shard / "queries.jsonl").read_text().splitlines() if l.strip()]
        steps = [l for l in (shard / "steps.jsonl").read_text().splitlines() if l.strip()]
        hidden = np.fromfile(shard / "hidden.f32", dtype=np.float32).reshape(-1, d)
        rows: dict[str, list[int]] = {}
        for i, l in enumerate(steps):
            rows.setdefault(json.loads(l)["query"], []).append(i)
        for l in queries:
            q = json.loads(l)
            idx = rows.get(q["key"], [])
            parts.append((order[q["id"]], l, [steps[i] for i in idx], hidden[idx]))
    parts.sort(key=lambda p: p[0])
    (out / "queries.jsonl").write_text("".join(p[1] + "\n" for p in parts))
    (out / "steps.jsonl").write_text("".join(l + "\n" for p in parts for l in p[2]))
    np.concatenate([p[3] for p in parts] or [np.zeros((0, d), np.float32)]).astype(np.float32).tofile(
        out / "hidden.f32")
    skipped: dict[str, int] = {}
    for m in metas:
        for k, v in m["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    return _write_meta(out, cfg, command, d, skipped, time.perf_counter() - t0,
                       [t for m in metas for t in m["query_seconds"]])


def load_queries(data_dir: str | os.PathLike) -> dict[str, dict]:
    """The queries of a data folder (queries.jsonl), by their key."""
    lines = (Path(data_dir) / "queries.jsonl").read_text().splitlines()
    return {q["key"]: q for q in (json.loads(line) for line in lines if line.strip())}


def load(data_dir: str | os.PathLike) -> tuple[list[dict], np.ndarray, dict]:
    """(step records, hidden states (n, d) float32, meta)."""
    p = Path(data_dir)
    if not (p / "steps.jsonl").exists():
        raise ToolprmError(f"no PRM data in {p}; run `toolprm train data --out {p}` first")
    lines = (p / "steps.jsonl").read_text().split("\n")
    if lines and lines[-1].strip():
        lines = lines[:-1]  # a line still being written (a run in progress)
    records = [json.loads(l) for l in lines if l.strip()]
    meta = json.loads((p / "meta.json").read_text()) if (p / "meta.json").exists() else {}
    raw = np.fromfile(p / "hidden.f32", dtype=np.float32)
    d = meta.get("hidden_size") or (raw.size // max(1, len(records)))
    hidden = raw[: raw.size // d * d].reshape(-1, d)
    if meta.get("complete", True) and hidden.shape[0] != len(records):
        raise ToolprmError(f"{p}: {len(records)} steps but {hidden.shape[0]} hidden rows")
    n = min(len(records), hidden.shape[0])  # a run in progress: the part written so far
    if not meta.get("complete", True) and records:
        # keep whole queries only
        last = records[n - 1]["query"] if n else None
        while n and records[n - 1]["query"] == last and (n == len(records) or records[n]["query"] == last):
            n -= 1
    records, hidden = records[:n], hidden[:n]
    assert_not_test(sorted({r["query_id"] for r in records}))
    return records, hidden, meta


__all__ = ["DataConfig", "DEFAULT_MIX", "build", "load", "pick_cases"]
