"""``toolprm bench bfcl``: run strategies on BFCL cases and score them with BFCL's checker.

Every strategy sees the same cases, the same model object and the same prompt
(:func:`toolprm.engine.prompts.build_prompt`); the engine's strategies run
through :func:`toolprm.engine.generate`, the ``outlines`` peer through
:class:`toolprm.bench.outlines_peer.OutlinesPeer`, the ``xgrammar`` and ``llguidance``
peers through their transformers logits processors
(:mod:`toolprm.bench.processor_peers`). Each output is scored by
:func:`toolprm.bfcl.check` (BFCL's own ``ast_checker``).

Output folder (``--out DIR``, default ``out/bfcl``):

* ``run.json``: the settings a resumed run must share (model, call-count mode,
  max_new_tokens, temperature, seed, aggregation, scorer);
* ``cases.jsonl``: one record per (case, strategy), appended as each finishes, so
  an interrupted run resumes where it stopped (pairs already present are skipped);
  under ``--jobs J``, ``shard-K/cases.jsonl`` per worker instead. The folder and
  its shards are one run: a resumed run skips what any of them holds, whatever
  ``--jobs`` it runs with, and ``bench report`` and ``bench compare`` read them all;
* ``invocations.jsonl``: each invocation's command, machine (CPU, cores), jobs and
  threads when it starts, and its wall time when it ends (``bench report`` states
  them under its table);
* ``summary.json``, ``accuracy_by_category.png``, ``accuracy_vs_compute.png``
  (see :mod:`toolprm.bench.report`), and the markdown table on stdout. They
  describe every record in the folder (earlier invocations' too), the requested
  strategies first.

Call-count mode (``--calls``): ``any`` (default) lets every strategy answer with
zero, one or several calls in every category — what BFCL asks of a model, which
is never told the category; irrelevance cases need ``[]`` to be possible.
``oracle`` uses the category's answer shape instead (exactly one call for
simple/multiple, one or more for parallel, any for irrelevance): an upper bound,
not a BFCL score. ``one`` and ``one_or_more`` apply everywhere.
"""
from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from toolprm.bench import report
from toolprm.bench.report import RunConfig
from toolprm.bench.oracle import LABEL as ORACLE_LABEL
from toolprm.bench.oracle import OracleScorer
from toolprm.bench.outlines_peer import OutlinesPeer
from toolprm.bench.processor_peers import PROCESSOR_PEERS
from toolprm.bfcl import (CATEGORIES, LANGUAGE_CATEGORIES, OTHER_CATEGORIES, TEST_CATEGORIES, TRAIN_CATEGORIES, Case,
                          check, language_of, load_cases)
from toolprm.engine.api import DEFAULT_SCORER, SCORERS, generate
from toolprm.engine.lean import DTYPES, cpu_flags, cpu_model, resolve_dtype
from toolprm.engine.models import get_policy
from toolprm.engine.workers import WorkerPool, threads_per_job
from toolprm.engine.explore import EXPLORATIONS, Exploration
from toolprm.engine.search import AGGREGATIONS, STRATEGIES
from toolprm.errors import ToolprmError
from toolprm.grammar import CALL_MODES, normalize_tools
from toolprm.reward.prm import ENDS_READERS, KEYS_READERS, default_scorer
from toolprm.reward.prm import load as reward_load

__all__ = ["STRATEGY_CHOICES", "BENCH_CALL_MODES", "RunConfig", "StrategySpec", "calls_for", "make_record",
           "run_bench", "ModelRunner", "main"]

PEERS = ("outlines", "xgrammar", "llguidance")
STRATEGY_CHOICES = tuple(STRATEGIES) + PEERS
#: The grammar's call-count modes, plus "oracle": each category's own answer shape.
BENCH_CALL_MODES = tuple(CALL_MODES) + ("oracle",)
# "non_live": every category of BFCL's Non-Live summary (bfcl.summary), Java and
# JavaScript included; "test" stays the Python ones, the default run.
CATEGORY_GROUPS = {"test": TEST_CATEGORIES, "train": TRAIN_CATEGORIES, "all": CATEGORIES,
                   "non_live": TEST_CATEGORIES + LANGUAGE_CATEGORIES}

#: Answer shape per category, used only by ``--calls oracle``.
_ORACLE = {
    "simple_python": "one", "multiple": "one", "live_simple": "one", "live_multiple": "one",
    "simple_java": "one", "simple_javascript": "one",
    "parallel": "one_or_more", "parallel_multiple": "one_or_more",
    "live_parallel": "one_or_more", "live_parallel_multiple": "one_or_more",
    "irrelevance": "any", "live_irrelevance": "any",
    "nestful": "one_or_more", "coordinated": "one_or_more",
}


@dataclass(frozen=True)
class StrategySpec:
    """A strategy with its search width; ``label`` names it in records and tables."""
    name: str
    m: int = 8
    n: int = 2
    exploration: str = "structured"  # fine_beam's candidates (engine.explore)

    @property
    def label(self) -> str:
        if self.name == "fine_beam" and self.exploration != "structured":
            return f"{self.name}(m={self.m},n={self.n},{self.exploration})"
        if self.name in ("coarse_beam", "fine_beam"):
            return f"{self.name}(m={self.m},n={self.n})"
        if self.name in ("best_of_n", "majority"):
            return f"{self.name}(n={self.n})"
        return self.name


def calls_for(category: str, mode: str) -> str:
    """The grammar's call-count mode for a case of ``category`` under ``--calls mode``."""
    if mode not in BENCH_CALL_MODES:
        raise ToolprmError(f"--calls must be one of {', '.join(BENCH_CALL_MODES)}, got {mode!r}")
    return _ORACLE[category] if mode == "oracle" else mode


def model_tools(case: Case) -> list:
    """The tools as BFCL shows them to a model: Java / JavaScript specs become string
    parameters carrying BFCL's hints (normalized here, since ``generate`` cannot know
    the language); the others go as shipped. ``check`` still reads ``case.tools``."""
    language = language_of(case.category)
    return case.tools if language == "python" else normalize_tools(case.tools, language=language)


class Runner(Protocol):
    def __call__(self, case: Case, spec: StrategySpec, calls: str) -> Any:
        """An object with ``calls``, ``text`` and ``stats`` (an engine Result)."""


class ModelRunner:
    """Runs engine strategies and peers on one shared policy (model + tokenizer)."""

    def __init__(self, config: RunConfig, model: Any = None) -> None:
        self.config = config
        self.policy = get_policy(model if model is not None else config.model, dtype=config.dtype)
        self._outlines = None
        self._peers: dict = {}
        self._head = None

    def _head_scorer(self):
        """The prm or hybrid scorer over the head at ``config.prm`` (once per worker)."""
        if self._head is None:
            name = DEFAULT_SCORER if self.config.scorer == "default" else self.config.scorer
            self._head = default_scorer(self.policy, values="policy" if name == "hybrid" else "head",
                                        path=None if self.config.prm == "shipped" else self.config.prm,
                                        ends=self.config.ends, keys=self.config.keys)
        return self._head

    def __call__(self, case: Case, spec: StrategySpec, calls: str):
        c = self.config
        if spec.name == "outlines":
            if self._outlines is None:
                self._outlines = OutlinesPeer(self.policy)
            return self._outlines.generate(case.messages, model_tools(case), calls=calls,
                                           max_new_tokens=c.max_new_tokens)
        if spec.name in PROCESSOR_PEERS:
            if spec.name not in self._peers:
                self._peers[spec.name] = PROCESSOR_PEERS[spec.name](self.policy)
            return self._peers[spec.name].generate(case.messages, model_tools(case), calls=calls,
                                                   max_new_tokens=c.max_new_tokens)
        scorer = {"default": None, "oracle": OracleScorer(case) if c.scorer == "oracle" else None}.get(
            c.scorer, c.scorer)
        if (c.prm != "shipped" or c.ends != "auto" or c.keys != "auto") and STRATEGIES[spec.name].ranks:
            scorer = self._head_scorer()
        return generate(case.messages, model_tools(case), model=self.policy, strategy=spec.name, calls=calls,
                        m=spec.m, n=spec.n, temperature=c.temperature, seed=c.seed,
                        max_new_tokens=c.max_new_tokens, aggregation=c.aggregation, scorer=scorer,
                        exploration=spec.exploration, top_k=c.top_k, proposals=c.proposals,
                        distinct_values=c.distinct_values, close_values=c.close_values,
                        distinct_calls=c.distinct_calls)


def make_record(case: Case, label: str, calls_mode: str, result: Any = None,
                exception: BaseException | None = None, seconds: float | None = None) -> dict:
    """Score one output with BFCL's checker and lay it out as a cases.jsonl record.

    A strategy that raised (``exception``) made no output: the case counts as
    wrong in every category, irrelevance included, and the record says why."""
    if exception is not None:
        calls, text, stats = None, "", {"seconds": round(seconds or 0.0, 4)}
        valid, correct = False, False
        errors = [f"{type(exception).__name__}: {exception}"]
        error_type = f"exception:{type(exception).__name__}"
    else:
        calls, text, stats = result.calls, result.text, dict(result.stats)
        verdict = check(case, calls)
        valid, correct, errors, error_type = (verdict.valid, verdict.correct, verdict.errors,
                                              verdict.error_type)
    return {
        "id": case.id,
        "category": case.category,
        "strategy": label,
        "calls_mode": calls_mode,
        "text": text,
        "calls": calls,
        "valid": valid,
        "correct": correct,
        "error_type": error_type,
        "errors": errors,
        "generated_tokens": stats.get("generated_tokens", 0),
        "forced_tokens": stats.get("forced_tokens", 0),
        "forward_passes": stats.get("forward_passes", 0),
        "scorer_calls": stats.get("scorer_calls", 0),
        "seconds": stats.get("seconds", 0.0),
        "stats": stats,
        "exception": errors[0] if exception is not None else None,
    }


def run_pair(runner: Runner, case: Case, spec: StrategySpec, calls_mode: str) -> dict:
    """One (case, strategy) pair run and scored: its cases.jsonl record. A strategy
    that raises is recorded as such (``make_record``), and the run goes on."""
    calls = calls_for(case.category, calls_mode)
    t0 = time.perf_counter()
    try:
        return make_record(case, spec.label, calls, runner(case, spec, calls))
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if os.environ.get("TOOLPRM_DEBUG"):
            traceback.print_exc()
        return make_record(case, spec.label, calls, exception=exc, seconds=time.perf_counter() - t0)


def _check_run_file(out: Path, config: RunConfig) -> None:
    """Refuse to mix settings in one folder; (re)write run.json with the full settings."""
    path = out / report.RUN_FILE
    wanted = asdict(config)
    if path.exists():
        try:
            have = json.loads(path.read_text(encoding="utf-8")).get("config", {})
        except (ValueError, AttributeError):
            have = None  # unreadable: written anew below
        if have is not None:
            have = {**asdict(RunConfig()), **have}  # settings added since then take their defaults
            if have != wanted:
                diff = ", ".join(f"{k}: {have.get(k)!r} there, {v!r} now" for k, v in wanted.items()
                                 if have.get(k) != v)
                raise ToolprmError(f"{out} holds a run with other settings ({diff}); resume it with "
                                   "the same settings or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": wanted}, indent=2) + "\n", encoding="utf-8")


def _postfix(stats: dict[str, list[int]]) -> str:
    return "  ".join(f"{label} {100 * c / n:.0f}%" for label, (c, n) in stats.items() if n)


def run_bench(cases: list[Case], specs: list[StrategySpec], out: str | os.PathLike, config: RunConfig,
              runner: Runner | Callable[[], Runner], *, progress: bool = True,
              lazy_runner: bool = True, position: int = 0, desc: str = "bfcl") -> list[dict]:
    """Run every (case, strategy) pair not yet in ``out/cases.jsonl``, appending
    each record as it finishes; return the records of the requested pairs.

    ``runner`` is called as ``runner(case, spec, calls)``; with ``lazy_runner``
    it is a factory, called once and only if some pair is left to run (so a
    finished folder is re-summarized without loading the model)."""
    from tqdm import tqdm

    out = Path(out)
    _check_run_file(out, config)
    path = out / report.CASES_FILE
    # the folder's shards too: a run begun with --jobs J resumes here without repeats
    existing = {(r["id"], r["strategy"]): r for r in report.load_records(out, repair=True)}
    labels = [s.label for s in specs]
    wanted = [(case, spec) for case in cases for spec in specs]
    done = {(c.id, s.label) for c, s in wanted if (c.id, s.label) in existing}
    todo = [(c, s) for c, s in wanted if (c.id, s.label) not in done]

    running = {label: [0, 0] for label in labels}
    for c, s in wanted:
        r = existing.get((c.id, s.label))
        if r is not None:
            running[s.label][0] += bool(r["correct"])
            running[s.label][1] += 1

    if todo:
        live_runner = runner() if lazy_runner else runner
        bar = tqdm(total=len(wanted), initial=len(done), desc=desc, unit="run", dynamic_ncols=True,
                   disable=not progress, file=sys.stderr, position=position)
        bar.set_postfix_str(_postfix(running))
        try:
            with open(path, "a", encoding="utf-8") as f:
                for case, spec in todo:
                    rec = run_pair(live_runner, case, spec, config.calls)
                    if progress and rec["exception"]:
                        bar.write(f"{case.id} {spec.label}: {rec['exception']}")
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    f.flush()
                    existing[(case.id, spec.label)] = rec
                    running[spec.label][0] += bool(rec["correct"])
                    running[spec.label][1] += 1
                    bar.set_postfix_str(_postfix(running), refresh=False)
                    bar.update(1)
        finally:
            bar.close()
    return [existing[(c.id, s.label)] for c, s in wanted]


def machine() -> dict:
    """What a run's wall times depend on: the CPU, its cores, its bf16 units, torch."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "bf16": sorted({"amx_bf16", "avx512_bf16"} & cpu_flags()), "torch": importlib.metadata.version("torch")}


def log_invocation(out: str | os.PathLike, entry: dict, started: str | None = None) -> str:
    """Append one line to ``out/invocations.jsonl``: an invocation's start (its
    command, this machine; ``started`` None) or its end (``started`` names it).
    Returns the start's time stamp."""
    path = Path(out) / report.INVOCATIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if started is None:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry = {"started": started, **entry, "machine": machine()}
    else:
        entry = {"started": started, **entry}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return started


def _categories(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ["test"]:
        for item in v.split(","):
            item = item.strip()
            if item in CATEGORY_GROUPS:
                out.extend(CATEGORY_GROUPS[item])
            elif item in CATEGORIES + LANGUAGE_CATEGORIES + OTHER_CATEGORIES:
                out.append(item)
            elif item:
                raise ToolprmError(f"unknown BFCL category {item!r}; choose from "
                                   f"{', '.join(CATEGORIES + LANGUAGE_CATEGORIES)}, a held-out other "
                                   f"({', '.join(OTHER_CATEGORIES)}) or a group: {', '.join(CATEGORY_GROUPS)}")
    return list(dict.fromkeys(out))


def _run_share(cases, specs, out: Path, config: RunConfig, shard: int | None = None,
               progress: bool = True) -> None:
    """Run ``cases`` x ``specs`` into ``out`` in this process."""
    run_bench(cases, specs, out, config, lambda: ModelRunner(config), progress=progress,
              position=0 if shard is None else shard, desc="bfcl" if shard is None else f"shard-{shard}")


def _chunk_records(runner: "ModelRunner", chunk: tuple[list, list]) -> list[dict]:
    """The records of one chunk of (cases, strategies), run in a worker on its runner."""
    cases, specs = chunk
    return [run_pair(runner, case, spec, runner.config.calls) for case in cases for spec in specs]


def _append_records(shard: Path, config: RunConfig, records: list[dict]) -> None:
    """Records a worker sent back, appended to its shard folder by the driver (so a
    worker on another machine needs no shared disk)."""
    _check_run_file(shard, config)
    with open(shard / report.CASES_FILE, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def run_sharded(cases: list[Case], specs: list[StrategySpec], out: str | os.PathLike, config: RunConfig,
                jobs: int = 1, threads: int | None = None, progress: bool = True,
                address: str | None = None) -> list[dict]:
    """Run every pair not yet done, in this process (``jobs`` 1: into ``out``) or on
    ``jobs`` Ray workers (``engine.workers.WorkerPool``: a local cluster, or the one
    at ``address``) with ``threads`` torch threads each (default: a share of the
    cores). Each worker loads the policy once and takes chunks of a few cases as it
    becomes free (one that drew quick cases takes more); the driver appends what
    worker K sends back to ``out/shard-K`` as each chunk ends. A resumed run, with
    any ``jobs``, skips the pairs ``out`` or any shard holds; a worker that dies is
    started again and its chunk rerun. Returns the records of every pair in the folder(s),
    one per (case, strategy)."""
    from tqdm import tqdm

    out = Path(out)
    if jobs < 1:
        raise ToolprmError("--jobs must be a positive integer")
    if jobs == 1:
        if threads:
            import torch
            torch.set_num_threads(threads)
        _run_share(cases, specs, out, config, progress=progress)
        return report.load_records(out)

    def merged() -> dict:  # OUT's own records (a --jobs 1 run) and its shards'
        return {(r["id"], r["strategy"]): r for r in report.load_records(out)}
    _check_run_file(out, config)  # the folder's settings, whichever --jobs wrote its records
    done = merged()
    todo = [c for c in cases if any((c.id, s.label) not in done for s in specs)]
    size = max(1, min(8, len(todo) // (4 * jobs)))  # small enough to even out the ends
    chunks = plan_chunks(todo, specs, done, size)
    if chunks:
        with WorkerPool(functools.partial(ModelRunner, config), jobs, threads_per_job(jobs, threads),
                        address) as pool, \
                tqdm(total=len(cases), initial=len(cases) - len(todo), desc="bfcl", unit="case",
                     disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            for k, records in pool.imap_unordered(_chunk_records, chunks):
                _append_records(out / f"shard-{k}", config, records)
                bar.update(len({r["id"] for r in records}))
    # Keyed by (case, strategy): a pair run twice (e.g. in an interrupted chunk) counts once.
    return list(merged().values())


def plan_chunks(cases: list[Case], specs: list[StrategySpec], done, size: int) -> list[tuple[list, list]]:
    """Chunks of at most ``size`` cases, each with the strategies its cases still lack
    in any shard (``done``: (case id, label) pairs). A worker sees only its own shard,
    so it must not be sent a pair another shard holds: it would run it again."""
    groups: dict[tuple[str, ...], list[Case]] = {}
    for c in cases:
        groups.setdefault(tuple(s.label for s in specs if (c.id, s.label) not in done), []).append(c)
    return [(group[i:i + size], [s for s in specs if s.label in labels])
            for labels, group in groups.items() if labels for i in range(0, len(group), size)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="toolprm bench bfcl",
        description="Run strategies on BFCL v4 cases, score them with BFCL's own AST checker, and "
                    "write cases.jsonl, summary.json, plots and a markdown table.")
    p.add_argument("--category", action="append", metavar="CAT",
                   help="BFCL category (repeatable, or comma-separated); groups: test (default: the "
                        "non-live Python categories), non_live (test plus simple_java and "
                        "simple_javascript), train (the live ones), all (test and train)")
    p.add_argument("--strategy", action="append", choices=STRATEGY_CHOICES, metavar="STRATEGY",
                   help=f"repeatable; one of {', '.join(STRATEGY_CHOICES)} (default: greedy)")
    p.add_argument("--model", default=None, help="model name or path (default: embedded SmolLM2-135M)")
    p.add_argument("--limit", type=int, default=None,
                   help="cases per category: a deterministic, evenly spread subset (default: all)")
    p.add_argument("--out", default="out/bfcl",
                   help="output folder (default: out/bfcl); an existing one is resumed")
    p.add_argument("--calls", default="any", choices=BENCH_CALL_MODES,
                   help="call-count mode: any (default, BFCL's setting), one, one_or_more, or oracle "
                        "(the category's answer shape; an upper bound, not a BFCL score)")
    p.add_argument("-m", type=int, default=8, help="samples per beam per step (beam strategies)")
    p.add_argument("-n", type=int, default=2, help="beams kept / samples for best_of_n and majority")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--aggregation", default=RunConfig.aggregation, choices=AGGREGATIONS)
    p.add_argument("--scorer", default="default", choices=("default", *SCORERS, "oracle"),
                   help="step scorer of the ranking strategies: default (engine.generate's own: the "
                        "shipped PRM for fine_beam, coarse_beam and best_of_n), prm, hybrid (the PRM "
                        "with the policy's confidence for values), policy (the policy's own "
                        "confidence), minilm (the cross-encoder reader), or oracle (reads the ground "
                        "truth: a ceiling, a diagnostic only)")
    p.add_argument("--prm", default=None, metavar="FOLDER",
                   help="the head's checkpoint folder for the prm and hybrid scorers (default: the "
                        "shipped reward/checkpoint)")
    p.add_argument("--ends", default=RunConfig.ends, choices=ENDS_READERS,
                   help="who reads the end decision (after a call: close the list or call again) for "
                        "the prm and hybrid scorers: auto (default: the policy where it was measured to "
                        "read it well, reward.prm.POLICIES_READING_ENDS; else the head), head, or policy "
                        "(its own probability of the choice)")
    p.add_argument("--keys", default=RunConfig.keys, choices=KEYS_READERS,
                   help="who reads a key step (the next parameter, or closing the arguments) for the "
                        "prm and hybrid scorers: auto (default: the policy where it was measured to read "
                        "it well, reward.prm.POLICIES_READING_KEYS; else the head), head, or policy")
    p.add_argument("--exploration", default="structured", choices=EXPLORATIONS,
                   help="fine_beam's candidates: structured (default) or sampling (m samples only)")
    p.add_argument("--top-k", type=int, default=RunConfig.top_k,
                   help="discrete alternatives kept per step (structured exploration)")
    p.add_argument("--proposals", type=int, default=RunConfig.proposals,
                   help="grounded proposals kept per free-form value (structured exploration)")
    p.add_argument("--distinct-values", action=argparse.BooleanOptionalAction, default=Exploration.distinct_values,
                   help="at a value step, drop a candidate that repeats another parameter's string in "
                        "the same call where a sibling does not (structured exploration; default: %(default)s)")
    p.add_argument("--close-values", action=argparse.BooleanOptionalAction, default=Exploration.close_values,
                   help="also offer closed each sampled value whose last token commits to another key "
                        "(structured exploration; default: %(default)s)")
    p.add_argument("--distinct-calls", action=argparse.BooleanOptionalAction, default=Exploration.distinct_calls,
                   help="drop a candidate that completes a copy of an earlier call where a sibling "
                        "completes a different one (structured exploration; default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a machine shared with other jobs, 1 avoids thread "
                        "oversubscription, which slows decoding many times over)")
    p.add_argument("--jobs", type=int, default=1, help="Ray workers (pip install 'toolprm[scale]'), each "
                   "loading the policy once and taking chunks of cases as they become free, their "
                   "records in OUT/shard-K; a share of the cores each unless --threads says otherwise")
    p.add_argument("--address", default=None, help="the Ray cluster to run the --jobs workers on: 'auto' "
                   "or host:port (default: a local one, started for this run)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="the policy's weights: auto (int4 on a CPU with AVX512-BF16 or AMX, else "
                        "float32), float32, bfloat16 or int4 (see README, Speed)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.limit is not None and a.limit < 1:
        raise ToolprmError(f"--limit must be a positive integer, got {a.limit}")
    for name in ("m", "n", "max_new_tokens"):
        if getattr(a, name) < 1:
            raise ToolprmError(f"--{name.replace('_', '-')} must be a positive integer")
    if a.threads is not None and a.threads < 1:
        raise ToolprmError("--threads must be a positive integer")
    head_read = (DEFAULT_SCORER if a.scorer == "default" else a.scorer) in ("prm", "hybrid")
    for flag, given in (("--prm", a.prm is not None), ("--ends", a.ends != "auto"),
                        ("--keys", a.keys != "auto")):
        if given and not head_read:
            raise ToolprmError(f"{flag} is read by the prm and hybrid scorers, not by {a.scorer!r}")
    if a.prm is not None:
        reward_load(a.prm)  # a clear error now, not in every worker
    categories = _categories(a.category)
    specs = [StrategySpec(s, a.m, a.n, a.exploration) for s in dict.fromkeys(a.strategy or ["greedy"])]
    config = RunConfig(model=a.model or "smollm2", calls=a.calls, max_new_tokens=a.max_new_tokens,
                       temperature=a.temperature, seed=a.seed, aggregation=a.aggregation,
                       top_k=a.top_k, proposals=a.proposals, distinct_values=a.distinct_values,
                       close_values=a.close_values, distinct_calls=a.distinct_calls,
                       scorer=a.scorer, dtype=resolve_dtype(a.dtype), prm=a.prm or "shipped", ends=a.ends,
                       keys=a.keys)
    cases = [c for cat in categories for c in load_cases(cat, a.limit)]
    t0 = time.perf_counter()
    started = log_invocation(a.out, {"command": "toolprm bench bfcl " + " ".join(sys.argv[3:] if argv is None else argv),
                                     "jobs": a.jobs, "threads": threads_per_job(a.jobs, a.threads),
                                     "dtype": config.dtype, "pairs": len(cases) * len(specs)})
    records = run_sharded(cases, specs, a.out, config, a.jobs, a.threads, progress=not a.quiet,
                          address=a.address)
    wall = time.perf_counter() - t0
    log_invocation(a.out, {"ended": True, "seconds": round(wall, 1)}, started)
    _, table = report.write_outputs(records, a.out, strategies=[s.label for s in specs],
                                    config=asdict(config), plots=not a.no_plots)
    print(table)
    print(f"\n{len(cases)} cases × {len(specs)} strategies; this invocation {wall:.0f} s; "
          f"results in {a.out}/ ({report.CASES_FILE}, {report.SUMMARY_FILE}"
          + ("" if a.no_plots else f", {report.PLOT_CATEGORIES}, {report.PLOT_COMPUTE}") + ")")
    return 0
