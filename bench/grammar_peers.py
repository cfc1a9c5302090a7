"""Grammar engines side by side (``toolprm bench grammar --peers ...``): ours against
XGrammar, llguidance and outlines-core, in one run, on the same schemas and vocabularies.

For each vocabulary (SmolLM2's 49k tokens, Qwen2.5's 152k):

* **BFCL non-live tool sets.** Every engine gets the same JSON Schema, the one our grammar
  is compiled from (``grammar.schema``: the list of calls). Measured per tool set:
  fresh compile + first mask (every compile cache emptied first; the per-vocabulary
  tables, built once, are not counted), a cached compile, and per token of the
  tool set's answer (BFCL's ground truth, arguments in the schema's key order, written by
  ``json.dumps``) the time of computing the mask plus advancing by the token, cold
  (a freshly compiled grammar) and warm (the same walk again), least of 3 runs per step.
* **JSON-Schema-Test-Suite** (draft 2020-12, from the jsonschema sdist of ``make suite``).
  Which schemas each engine compiles, and on the instances of those it compiles, how
  often its language differs from the suite's verdicts: an invalid instance accepted
  is *unsound*, a valid one rejected *incomplete*. Instances are written by
  ``json.dumps`` and walked as the vocabulary's tokens. Our grammar only compiles tool
  lists, so for it the schema is the one parameter of a tool and the instance that
  argument of a one-call list (as ``tests/schema_suite.py`` does); the peers get the
  schema and the instance themselves.

Peer settings: XGrammar ``compile_json_schema(any_whitespace=False, separators=(", ",
": "))`` with its default ``strict_mode=True``; llguidance ``grammar_from_json_schema``
with ``whitespace_flexible=False`` and the same separators (its default: unknown
keywords are an error); outlines-core ``build_regex_from_schema`` with ``[ ]?``
whitespace, and a ``Guide`` over its ``Index``. One thread each. Nothing here asserts
on time; the ratios ours / peer are measured within one run.
"""
from __future__ import annotations

import ctypes
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolprm import grammar as G
from toolprm.errors import InvalidTokenError, ToolprmError, ToolSchemaError
from toolprm.grammar import compiled

from .suite import tool_for

PEERS = ("xgrammar", "llguidance", "outlines-core")
LABELS = {"ours": "ours", "xgrammar": "XGrammar", "llguidance": "llguidance", "outlines-core": "outlines-core"}
INSTALL = {"xgrammar": "xgrammar==0.2.8", "llguidance": "llguidance==1.9.1", "outlines-core": "outlines-core"}
REPS = 3
SEPARATORS = (", ", ": ")


class Refused(Exception):
    """The engine does not compile this schema."""


@dataclass
class Task:
    """One schema as each engine takes it: our tools (or None: ours refuses) and the peers' schema."""
    tools: list | None
    schema: Any
    calls: str = "one_or_more"
    max_calls: int = 16


def _bit(mask: np.ndarray, t: int) -> bool:
    return bool((int(mask[t >> 5]) >> (t & 31)) & 1)


# --- the engines -------------------------------------------------------------------------
# Each: setup per vocabulary (``setup_s``); forget() empties its compile cache; compile(task) -> handle (Refused if not);
# first_mask(handle); cached(task) -> seconds or None; walk(handle, tokens, warm) -> the
# seconds of mask + advance per token (None: a token was refused), cold on the handle
# as compiled, warm on it again; accepts(handle, tokens) -> bool (the text, then its end).


class Ours:
    name = "ours"

    def __init__(self, tokenizer, vocab: G.Vocabulary) -> None:
        t0 = time.perf_counter()
        vocab.string_tables()
        self.setup_s = time.perf_counter() - t0
        self.vocab = vocab

    def _compile(self, task: Task) -> G.Grammar:
        if task.tools is None:
            raise Refused("no tools")
        try:
            return G.compile(task.tools, self.vocab, calls=task.calls, max_calls=task.max_calls)
        except ToolSchemaError as e:
            raise Refused(str(e)) from e

    def forget(self) -> None:
        compiled._CACHE.clear()

    def compile(self, task: Task):
        return self._compile(task)

    def first_mask(self, g) -> None:
        g.start().allowed_mask()

    def cached(self, task: Task) -> float:
        t0 = time.perf_counter()
        self._compile(task)
        return time.perf_counter() - t0

    def fresh(self, g):
        """The same grammar with every cache empty but the vocabulary's."""
        return G.Grammar(g.tools, self.vocab, g.calls, g.max_calls)

    def walk(self, g, tokens: list[int]) -> list[float] | None:
        state, times = g.start(), []
        perf = time.perf_counter
        for t in tokens:
            t0 = perf()
            ok = state.allowed_mask()[t]
            if ok:
                state = state.advance(t)
            times.append(perf() - t0)
            if not ok:
                return None
        return times if state.is_final else None

    def accepts(self, g, tokens: list[int]) -> bool:
        state = g.start()
        try:
            for t in tokens:
                state = state.advance(t)
        except InvalidTokenError:
            return False
        return state.is_final


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab: G.Vocabulary) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        t0 = time.perf_counter()
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab.size,
                                                       stop_token_ids=list(vocab.eos_ids))
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=True)
        self.setup_s = time.perf_counter() - t0
        self.eos = vocab.eos_ids[0]
        self.mask = xgr.allocate_token_bitmask(1, vocab.size)
        self.row = self.mask[0].numpy()

    def _compile(self, task: Task):
        try:
            return self.compiler.compile_json_schema(json.dumps(task.schema), any_whitespace=False,
                                                     separators=SEPARATORS)
        except Exception as e:  # noqa: BLE001 - XGrammar raises RuntimeError/ValueError on what it refuses
            raise Refused(f"{type(e).__name__}: {str(e)[:300]}") from e

    def forget(self) -> None:
        self.compiler.clear_cache()

    def compile(self, task: Task):
        return self._compile(task)

    def first_mask(self, cg) -> None:
        self.xgr.GrammarMatcher(cg).fill_next_token_bitmask(self.mask, 0)

    def cached(self, task: Task) -> float:
        t0 = time.perf_counter()
        self._compile(task)
        return time.perf_counter() - t0

    def fresh(self, cg):
        return cg  # its masks are precomputed at compile time: a new matcher is as cold as it gets

    def walk(self, cg, tokens: list[int]) -> list[float] | None:
        m, mask, row, times = self.xgr.GrammarMatcher(cg), self.mask, self.row, []
        perf = time.perf_counter
        for t in tokens:
            t0 = perf()
            m.fill_next_token_bitmask(mask, 0)
            ok = _bit(row, t) and m.accept_token(t)
            times.append(perf() - t0)
            if not ok:
                return None
        return times if m.accept_token(self.eos) else None

    def accepts(self, cg, tokens: list[int]) -> bool:
        m = self.xgr.GrammarMatcher(cg)
        return all(m.accept_token(t) for t in tokens) and m.accept_token(self.eos)


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab: G.Vocabulary) -> None:
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        t0 = time.perf_counter()
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab.size, eos_token=vocab.eos_ids[0])
        self.setup_s = time.perf_counter() - t0
        self.mask = np.full(((vocab.size + 31) // 32,), -1, dtype=np.int32)

    def _grammar(self, schema) -> str:
        try:
            return self.llg.LLMatcher.grammar_from_json_schema(
                json.dumps(schema), defaults={"whitespace_flexible": False, "item_separator": SEPARATORS[0],
                                              "key_separator": SEPARATORS[1]})
        except Exception as e:  # noqa: BLE001
            raise Refused(f"{type(e).__name__}: {str(e)[:300]}") from e

    def _matcher(self, grammar: str):
        m = self.llg.LLMatcher(self.tok, grammar, log_level=0)
        if m.is_error():
            raise Refused(m.get_error()[:300])
        return m

    def forget(self) -> None:
        pass  # no compile cache

    def compile(self, task: Task):
        g = self._grammar(task.schema)
        return g, self._matcher(g)

    def _fill(self, m) -> None:
        m.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)

    def first_mask(self, handle) -> None:
        self._fill(handle[1])

    def cached(self, task: Task) -> None:
        return None  # no compile cache: every matcher compiles its grammar anew

    def fresh(self, handle):
        g, _ = handle
        return g, self._matcher(g)

    def walk(self, handle, tokens: list[int]) -> list[float] | None:
        m = handle[1]
        m.reset()  # a walk again on the same matcher keeps its lexer's caches: warm
        if m.is_error():
            raise ToolprmError(f"llguidance matcher left in an error state: {m.get_error()[:200]}")
        mask, times, perf = self.mask, [], time.perf_counter
        for t in tokens:
            t0 = perf()
            m.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
            ok = _bit(mask, t) and m.consume_token(t)
            times.append(perf() - t0)
            if not ok:
                return None
        return times if m.is_accepting() else None

    def accepts(self, handle, tokens: list[int]) -> bool:
        m = handle[1].deep_copy()  # reset() does not leave an error state: copy the matcher as compiled
        return m.consume_tokens(tokens) and not m.is_error() and m.is_accepting()


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab: G.Vocabulary) -> None:
        import outlines_core

        self.oc = outlines_core
        t0 = time.perf_counter()
        tokens: dict[bytes, list[int]] = {}
        for i, b in enumerate(vocab.token_bytes):
            if b and i not in vocab.eos_ids:
                tokens.setdefault(b, []).append(i)
        self.vocabulary = outlines_core.Vocabulary(vocab.eos_ids[0], tokens)
        self.setup_s = time.perf_counter() - t0
        self.mask = np.full(((vocab.size + 31) // 32,), -1, dtype=np.int32)
        self.eos = vocab.eos_ids[0]

    def forget(self) -> None:
        pass  # no compile cache

    def compile(self, task: Task):
        from outlines_core.json_schema import build_regex_from_schema

        try:
            regex = build_regex_from_schema(json.dumps(task.schema), r"[ ]?")
            return self.oc.Index(regex, self.vocabulary)
        except Exception as e:  # noqa: BLE001
            raise Refused(f"{type(e).__name__}: {str(e)[:300]}") from e

    def first_mask(self, index) -> None:
        self.oc.Guide(index).write_mask_into(self.mask.ctypes.data, self.mask.size, 4)

    def cached(self, task: Task) -> None:
        return None  # no compile cache

    def fresh(self, index):
        return index  # the Index is computed whole at compile time

    def walk(self, index, tokens: list[int]) -> list[float] | None:
        guide, mask, times, perf = self.oc.Guide(index), self.mask, [], time.perf_counter
        ptr = mask.ctypes.data
        for t in tokens:
            t0 = perf()
            guide.write_mask_into(ptr, mask.size, 4)
            ok = _bit(mask, t)
            if ok:
                guide.advance(t, return_tokens=False)
            times.append(perf() - t0)
            if not ok:
                return None
        return times if guide.is_finished() else None

    def accepts(self, index, tokens: list[int]) -> bool:
        guide = self.oc.Guide(index)
        for t in tokens:
            if t not in guide.get_tokens():
                return False
            guide.advance(t, return_tokens=False)
        return guide.is_finished()


ENGINES = {"ours": Ours, "xgrammar": XGrammar, "llguidance": LLGuidance, "outlines-core": OutlinesCore}


def make_engines(names: list[str], tokenizer, vocab: G.Vocabulary) -> dict[str, Any]:
    """Ours first, then the peers asked for; a missing package is a clear error."""
    out = {}
    for name in ["ours"] + [n for n in names if n != "ours"]:
        if name not in ENGINES:
            raise ToolprmError(f"unknown grammar engine {name!r}; choose from {', '.join(PEERS)}")
        try:
            out[name] = ENGINES[name](tokenizer, vocab)
        except ImportError as e:
            raise ToolprmError(f"the {name} peer is not installed: pip install {INSTALL[name]} "
                               f"(or pip install -e '.[bench]')") from e
    return out


# --- BFCL tool sets ----------------------------------------------------------------------


def schema_ordered(calls: list[dict], schema: dict) -> list[dict]:
    """The calls with their arguments in the order the schema lists the properties
    (XGrammar and outlines-core fix that order; ours and llguidance take any)."""
    out = []
    variants = {v["properties"]["name"]["const"]: v["properties"]["arguments"]
                for v in schema["items"]["anyOf"]}
    for call in calls:
        props = list((variants.get(call["name"]) or {}).get("properties", {}))
        args = call["arguments"]
        keys = [k for k in props if k in args] + [k for k in args if k not in props]
        out.append({"name": call["name"], "arguments": {k: args[k] for k in keys}})
    return out


def _best(runs: list[list[float]]) -> list[float]:
    return [min(xs) for xs in zip(*runs)]


def _timed(fn, *a) -> tuple[Any, float]:
    """fn(*a) and its seconds, with the cyclic garbage collector paused (a full collection
    takes about 0.3 s with the vocabularies' tables in memory: too long to run per call)."""
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn(*a)
        return out, time.perf_counter() - t0
    finally:
        gc.enable()


def measure_tool_set(engines: dict, task: Task, tokens: list[int] | None, with_slow: bool) -> dict:
    """Compile times of every engine on one schema and, if ``tokens`` (an answer), its
    per-token times cold and warm: ``{engine: {...}}``; a refused schema holds ``error``."""
    row: dict[str, dict] = {}
    for name, eng in engines.items():
        if name == "outlines-core" and not with_slow:
            continue
        r: dict[str, Any] = {}
        row[name] = r
        try:
            def compile_first():
                h = eng.compile(task)
                eng.first_mask(h)
                return h
            eng.forget()
            handle, r["compile_s"] = _timed(compile_first)
        except Refused as e:
            r["error"] = str(e)[:300]
            continue
        r["cached_s"] = _timed(eng.cached, task)[0]
        if tokens is None:
            continue
        gc.disable()  # no collection inside a timed step; a walk allocates little
        try:
            cold_runs = [eng.walk(eng.fresh(handle), tokens) for _ in range(REPS)]
            warm_runs = None
            if all(c is not None for c in cold_runs):
                eng.walk(handle, tokens)  # once untimed: what a walk caches is there for the next
                warm_runs = [eng.walk(handle, tokens) for _ in range(REPS)]
        finally:
            gc.enable()
        if any(c is None for c in cold_runs):
            r["walk_rejected"] = True
            continue
        warm = _best(warm_runs)
        r["cold"], r["warm"] = _best(cold_runs), warm
    return row


# --- the test suite ----------------------------------------------------------------------


def suite_run(engines: dict, tokenizer, groups: list[tuple[str, dict]], progress: bool = True) -> dict:
    """Per engine: groups compiled, and among their instances the unsound (invalid
    accepted) and incomplete (valid rejected) ones, against the suite's verdicts."""
    from tqdm import tqdm


    out = {name: {"groups": len(groups), "compiled": 0, "compiled_sound": 0, "instances": 0, "unsound": [],
                  "incomplete": [], "compile_s": 0.0} for name in engines}
    enc: dict[str, list[int]] = {}

    def encode(text: str) -> list[int]:
        if text not in enc:
            enc[text] = tokenizer.encode(text, add_special_tokens=False)
        return enc[text]

    for gid, group in tqdm(groups, desc="test suite", file=sys.stderr, disable=not progress):
        for name, eng in engines.items():
            if name == "ours":
                task = Task([tool_for(group["schema"])], None, calls="one", max_calls=1)
            else:
                task = Task(None, group["schema"])
            eng.forget()
            try:
                handle, dt = _timed(eng.compile, task)
            except Refused:
                continue
            res = out[name]
            res["compiled"] += 1
            res["compile_s"] += dt
            unsound = len(res["unsound"])
            for test in group["tests"]:
                if name == "ours":
                    text = json.dumps([{"name": "t", "arguments": {"x": test["data"]}}])
                else:
                    text = json.dumps(test["data"])
                ok = eng.accepts(handle, encode(text))
                res["instances"] += 1
                if ok and not test["valid"]:
                    res["unsound"].append(f"{gid}: {test['description']}")
                elif test["valid"] and not ok:
                    res["incomplete"].append(f"{gid}: {test['description']}")
            res["compiled_sound"] += len(res["unsound"]) == unsound
    return out


# --- summary and table -------------------------------------------------------------------


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize_bfcl(rows: list[dict], engines: list[str]) -> dict:
    """Per engine: tool sets compiled, median fresh compile + first mask and cached
    compile; per peer, ratios ours / peer over the tool sets (and the answer walks)
    both compiled (accepted): median of the per-tool-set compile ratios, and the
    per-token median and mean of both on the same steps."""
    out: dict[str, dict] = {}
    for name in engines:
        have = [r[name] for r in rows if name in r]
        ok = [x for x in have if "error" not in x]
        cached = [x["cached_s"] for x in ok if x.get("cached_s") is not None]
        cold = [t for x in ok if "cold" in x for t in x["cold"]]
        warm = [t for x in ok if "warm" in x for t in x["warm"]]
        out[name] = {"tool_sets": len(have), "compiled": len(ok),
                     "walks": sum(1 for x in ok if "cold" in x),
                     "walks_rejected": sum(1 for x in ok if x.get("walk_rejected")),
                     "compile_ms": 1e3 * _med([x["compile_s"] for x in ok]) if ok else None,
                     "cached_us": 1e6 * _med(cached) if cached else None,
                     "step_cold_us": [1e6 * _med(cold), 1e6 * float(np.mean(cold))] if cold else None,
                     "step_warm_us": [1e6 * _med(warm), 1e6 * float(np.mean(warm))] if warm else None}
    for name in engines:
        if name == "ours":
            continue
        both = [r for r in rows if name in r and "error" not in r[name] and "error" not in r["ours"]]
        ratios = [r["ours"]["compile_s"] / r[name]["compile_s"] for r in both]
        walks = [r for r in both if "cold" in r[name] and "cold" in r["ours"]]
        rat: dict[str, Any] = {"tool_sets": len(both), "compile": _med(ratios), "walks": len(walks),
                               "steps": sum(len(r["ours"]["cold"]) for r in walks)}
        for kind in ("cold", "warm"):
            o = [t for r in walks for t in r["ours"][kind]]
            p = [t for r in walks for t in r[name][kind]]
            rat[kind] = [_med(o) / _med(p), float(np.mean(o)) / float(np.mean(p))] if o else None
        c_o = [r["ours"]["cached_s"] for r in both if r[name].get("cached_s") is not None]
        c_p = [r[name]["cached_s"] for r in both if r[name].get("cached_s") is not None]
        rat["cached"] = _med(c_o) / _med(c_p) if c_p else None
        out[name]["ratio"] = rat
    return out


def summarize_suite(suite: dict) -> dict:
    return {name: {k: (len(v) if isinstance(v, list) else v) for k, v in res.items()}
            for name, res in suite.items()}


def _fmt(x, spec: str, unit: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{unit}"


def _pair(xs, spec: str) -> str:
    return "–" if xs is None else f"{xs[0]:{spec}} / {xs[1]:{spec}}"


def table(result: dict) -> str:
    """The peer table of one run (``result`` as written to JSON), one block per vocabulary,
    with the issue's targets checked against XGrammar."""
    lines = []
    for vname, v in result["vocabularies"].items():
        engines = v["engines"]
        b, s = v["bfcl"], v.get("suite")
        peers = [e for e in engines if e != "ours"]
        head = ["measure"] + [LABELS[e] for e in engines] + [f"ours / {LABELS[p]}" for p in peers]
        lines += [f"**{vname}** vocabulary ({v['vocab_size']} tokens), {b['ours']['tool_sets']} BFCL "
                  f"non-live tool sets (outlines-core on {b.get('outlines-core', {}).get('tool_sets', 0)})"
                  + (f", {s['ours']['groups']} test-suite groups" if s else ""), "",
                  "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

        def row(label, key, fmt, ratio_key=None, rfmt=".3g"):
            cells = [fmt(b[e].get(key)) if e in b else "–" for e in engines]
            if ratio_key:
                rs = [b[p]["ratio"].get(ratio_key) if p in b else None for p in peers]
                cells += [("–" if r is None else (f"{r[0]:{rfmt}} / {r[1]:{rfmt}}" if isinstance(r, list)
                                                 else f"{r:{rfmt}}")) for r in rs]
            else:
                cells += [""] * len(peers)
            lines.append("| " + " | ".join([label] + cells) + " |")

        setup = [_fmt(1e3 * v["setup_s"][e], ".0f", " ms") for e in engines]
        lines.append("| " + " | ".join(["per-vocabulary setup, once"] + setup + [""] * len(peers)) + " |")
        lines.append("| " + " | ".join(
            ["BFCL tool sets compiled"] + [f"{b[e]['compiled']}/{b[e]['tool_sets']}" if e in b else "–"
                                           for e in engines] + [""] * len(peers)) + " |")
        row("fresh compile + first mask, median", "compile_ms", lambda x: _fmt(x, ".2f", " ms"), "compile")
        row("cached compile, median", "cached_us", lambda x: _fmt(x, ".0f", " µs"), "cached")
        row("mask + advance per token, cold, median / mean", "step_cold_us", lambda x: _pair(x, ".1f") + " µs"
            if x else "–", "cold")
        row("mask + advance per token, warm, median / mean", "step_warm_us", lambda x: _pair(x, ".1f") + " µs"
            if x else "–", "warm")
        lines.append("| " + " | ".join(
            ["answer walks timed (rejected)"] + [f"{b[e]['walks']} ({b[e]['walks_rejected']})" if e in b else "–"
                                                 for e in engines] + [""] * len(peers)) + " |")
        if s:
            for label, key in (("test-suite groups compiled", "compiled"),
                               ("of those, with no invalid instance accepted", "compiled_sound"),
                               ("unsound: invalid instances accepted", "unsound"),
                               ("incomplete: valid instances rejected", "incomplete")):
                cells = [(f"{s[e][key]}/{s[e]['groups']}" if key.startswith("compiled") else str(s[e][key]))
                         if e in s else "–" for e in engines]
                lines.append("| " + " | ".join([label] + cells + [""] * len(peers)) + " |")
        lines.append("")
        lines += targets(v)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def targets(v: dict) -> list[str]:
    """Issue 15's targets against XGrammar, each met or missed by how much."""
    b, s = v["bfcl"], v.get("suite")
    if "xgrammar" not in b:
        return []
    r = b["xgrammar"]["ratio"]
    out = ["Targets (issue 15), against XGrammar:"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for kind in ("cold", "warm"):
        x = r.get(kind)
        if x:
            out.append(f"- mask + advance per token ≤ XGrammar's, {kind}: ours / XGrammar {x[0]:.2f} (median), "
                       f"{x[1]:.2f} (mean): {verdict(max(x) <= 1)}"
                       + ("" if max(x) <= 1 else f", at worst {max(x):.2f}x XGrammar's"))
    if r.get("compile") is not None:
        c = r["compile"]
        out.append(f"- fresh compile + first mask ≤ 0.1x XGrammar's: {c:.3f}x (median over tool sets): "
                   f"{verdict(c <= 0.1)}" + ("" if c <= 0.1 else f", {c / 0.1:.1f}x the target"))
    if s and "xgrammar" in s:
        o, x = s["ours"]["compiled"], s["xgrammar"]["compiled"]
        out.append(f"- suite coverage ≥ XGrammar's: {o} against {x} groups compiled: {verdict(o >= x)}"
                   + ("" if o >= x else f", {x - o} short"))
        xs = s["xgrammar"].get("compiled_sound")
        if xs is not None:
            out.append(f"  - counting only groups compiled with no invalid instance accepted: {o} against {xs}: "
                       f"{verdict(o >= xs)}" + ("" if o >= xs else f", {xs - o} short"))
        out.append(f"- 0 unsound: ours {s['ours']['unsound']}: {verdict(s['ours']['unsound'] == 0)}")
    return out
