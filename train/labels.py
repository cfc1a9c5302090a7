"""Step labels under BFCL's checker semantics.

A step (an event of a rollout) is positive while the partial output up to and
including it is still consistent with at least one acceptable ground truth:

* ``name`` of call j: the calls before it are complete matches of distinct
  ground-truth calls (this is where "close the previous call" is judged: its
  required parameters must all have been given), and the new name is the name of
  a ground-truth call not matched yet (for parallel answers any order works).
  Irrelevance cases have no ground truth: every name is wrong.
* ``key``: the parameter is set by that ground-truth call (an optional parameter
  whose acceptable values include "" may be given or not), and was not given yet.
* ``value``: the value is acceptable for that key, judged by BFCL's own
  ``simple_function_checker`` on the one parameter (type rules, int → float,
  string normalization, dict and list-of-dict answers).
* ``end``: BFCL's checker on the whole call list (``toolprm.bfcl.check``), the
  same verdict the benchmark gives: the right number of calls, each complete;
  ``[]`` for irrelevance.

Once a step is negative every later step of the rollout is negative too (a
prefix that is already wrong stays wrong).
"""
from __future__ import annotations

from typing import Any, Sequence

from toolprm.bfcl import IRRELEVANCE_CATEGORIES, Case, call_ok, check, param_ok
from toolprm.grammar import STEP_KINDS as KINDS


def _gt_calls(case: Case) -> list[tuple[str, dict]]:
    out = []
    for answer in case.ground_truth:
        (name, params), = answer.items()
        out.append((name, params))
    return out


def _partial_ok(case: Case, call: dict, gt: tuple[str, dict], pending_key: str | None) -> bool:
    """A call in progress (name, some complete key/value pairs, maybe a key awaiting
    its value) is consistent with one ground-truth call."""
    name, params = gt
    if call["name"] != name:
        return False
    for key, value in call["arguments"].items():
        if key not in params or not param_ok(case, name, key, value, params[key]):
            return False
    if pending_key is not None and (pending_key not in params or pending_key in call["arguments"]):
        return False
    return True


def _assignable(done_sets: list[set[int]], partial_set: set[int] | None) -> bool:
    """Is there an injective assignment of ground-truth indices to the finished calls
    (each from its set) and, if given, the call in progress?"""
    sets = list(done_sets) + ([partial_set] if partial_set is not None else [])
    if any(not s for s in sets):
        return False
    # Backtracking over small sets (a handful of calls).
    order = sorted(range(len(sets)), key=lambda i: len(sets[i]))
    used: set[int] = set()

    def go(j: int) -> bool:
        if j == len(order):
            return True
        for g in sets[order[j]]:
            if g not in used:
                used.add(g)
                if go(j + 1):
                    return True
                used.discard(g)
        return False

    return go(0)


def step_labels(case: Case, events: Sequence[Any]) -> list[int]:
    """One label (1 = still consistent with an acceptable answer) per event.

    ``events``: objects with ``kind``, ``call``, ``key``, ``value`` (grammar
    ``StepEvent``s or ``rollout.Step``s), in order; ``end``'s value is the call list.
    """
    irrelevant = case.category in IRRELEVANCE_CATEGORIES
    gts = [] if irrelevant else _gt_calls(case)
    calls: list[dict] = []
    done_sets: list[set[int]] = []
    pending_key: str | None = None
    labels: list[int] = []
    ok = True
    for ev in events:
        kind = ev.kind
        if kind == "end":
            calls_out = ev.value if isinstance(ev.value, list) else None
            good = ok and check(case, calls_out).correct
            labels.append(int(good))
            ok = good
            continue
        if not ok:
            labels.append(0)
            if kind == "name":
                calls.append({"name": ev.value, "arguments": {}})
            continue
        if kind == "name":
            if calls:  # the previous call was closed: it must be a complete match
                done_sets.append({i for i, g in enumerate(gts) if call_ok(case, calls[-1], g)})
            calls.append({"name": ev.value, "arguments": {}})
            pending_key = None
        elif kind == "key":
            pending_key = ev.key if ev.key is not None else ev.value
        elif kind == "value":
            if calls:
                calls[-1]["arguments"][ev.key] = ev.value
            pending_key = None
        cur = calls[-1] if calls else None
        partial = None if cur is None else {i for i, g in enumerate(gts)
                                            if _partial_ok(case, cur, g, pending_key)}
        good = _assignable(done_sets, partial) and not irrelevant
        labels.append(int(good))
        ok = good
    return labels


def label_balance(records: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per step kind: count, positives, share positive."""
    out: dict[str, dict[str, float]] = {}
    for kind in KINDS + ("all",):
        ys = [r["label"] for r in records if kind == "all" or r["kind"] == kind]
        if ys:
            out[kind] = {"n": len(ys), "pos": sum(ys), "pos_rate": round(sum(ys) / len(ys), 4)}
    return out


def rollout_rows(records: Sequence[dict]) -> list[list[int]]:
    """Row indices of each rollout (query, rollout), in step order."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r["query"], r["rollout"]), []).append(i)
    return [sorted(idx, key=lambda i: records[i]["step"]) for idx in groups.values()]


def prefix_correct(records: Sequence[dict]) -> list[bool]:
    """Per step: every earlier step of its rollout is positive. These are the steps
    the PRM head learns from: its score is P(step correct | the steps before it are)."""
    out = [True] * len(records)
    for idx in rollout_rows(records):
        ok = True
        for i in idx:
            out[i] = ok
            ok = ok and bool(records[i]["label"])
    return out


def chain(records: Sequence[dict], step_scores: Sequence[float]) -> list[float]:
    """Per step: the product of the step scores of its rollout up to and including it
    (P(every step so far correct)), the score the PRM gives a partial output."""
    out = [0.0] * len(records)
    for idx in rollout_rows(records):
        acc = 1.0
        for i in idx:
            acc *= float(step_scores[i])
            out[i] = acc
    return out
