"""PRM metrics on held-out (validation) queries.

Each step is scored as the search scores a partial output ending there: the
product of the head's step scores along its rollout (``labels.chain``), against
the step's label (every step so far correct).  Per step kind and over all steps: step accuracy (threshold 0.5), balanced
accuracy, ROC AUC; per rollout: trajectory accuracy (every step of the rollout
judged right).  Beside each: the majority-class baseline (per kind, the
training split's majority label; AUC 0.5, balanced accuracy 0.5) and the
policy's own confidence (exp of the step's mean sampled log-prob, the engine's
``PolicyScorer``) as a ranking baseline.  Also reported on "choice" steps only
(at least one sampled token — the steps a beam search actually ranks).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from toolprm.grammar import STEP_KINDS as KINDS
from toolprm.reward.prm import load as load_checkpoint

from .data import load
from .features import backbone_hidden, features
from .labels import chain, rollout_rows


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC (Mann–Whitney, ties counted half); None when one class is absent."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    s_sorted = np.asarray(s)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s_sorted[j + 1] == s_sorted[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float | None:
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    parts = [float((pred[y == c] == c).mean()) for c in (True, False) if (y == c).any()]
    return float(np.mean(parts)) if parts else None


def _block(y, p, maj, conf) -> dict:
    pred = p >= 0.5
    return {
        "n": int(len(y)), "pos_rate": round(float(np.mean(y)), 4) if len(y) else None,
        "acc": round(float((pred == y).mean()), 4) if len(y) else None,
        "bal_acc": _r(balanced_accuracy(y, pred)),
        "auc": _r(auc(y, p)),
        "majority_acc": round(float((maj == y).mean()), 4) if len(y) else None,
        "majority_bal_acc": _r(balanced_accuracy(y, maj)),
        "policy_conf_auc": _r(auc(y, conf)),
    }


def _r(v):
    return None if v is None else round(v, 4)


def evaluate(data_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
             split: str = "val", features_cache: tuple | None = None) -> dict:
    """Metrics of a checkpoint on one split of a data folder (``features_cache``:
    (records, feature matrix) already computed for this checkpoint's backbone)."""
    prm = load_checkpoint(checkpoint)
    if features_cache is not None:
        records, x = features_cache
    else:
        records, hidden, meta = load(data_dir)
        backbone = prm.manifest.get("backbone", {})
        if backbone.get("kind") == "separate":
            hidden = backbone_hidden(data_dir, records, backbone["name"], progress=False)
        x = features(records, hidden, data_dir)
    y = np.array([r["label"] for r in records], dtype=bool)
    kinds = np.array([r["kind"] for r in records])
    train = np.array([r["split"] == "train" for r in records])
    ev = np.array([r["split"] == split for r in records])
    # A partial output's score: the product of the head's step scores along its rollout.
    p = np.array(chain(records, prm.predict(x)))
    conf = np.array([math.exp(r["logprob"] / r["sampled"]) if r["sampled"] else 1.0 for r in records])
    majority_of = {k: bool(y[train & (kinds == k)].mean() >= 0.5) if (train & (kinds == k)).any() else True
                   for k in KINDS}
    maj = np.array([majority_of[k] for k in kinds])
    choice = np.array([r["sampled"] > 0 for r in records])
    report: dict = {"split": split, "checkpoint": str(checkpoint or "shipped"), "steps": {}, "choice_steps": {}}
    for name, mask in (("steps", ev), ("choice_steps", ev & choice)):
        for k in KINDS + ("all",):
            m = mask if k == "all" else mask & (kinds == k)
            report[name][k] = _block(y[m], p[m], maj[m], conf[m])
    # Trajectory accuracy: every step of a rollout judged right.
    traj: dict[tuple, list[bool]] = {}
    traj_maj: dict[tuple, list[bool]] = {}
    for i in np.flatnonzero(ev):
        key = (records[i]["query"], records[i]["rollout"])
        traj.setdefault(key, []).append(bool((p[i] >= 0.5) == y[i]))
        traj_maj.setdefault(key, []).append(bool(maj[i] == y[i]))
    report["trajectories"] = {
        "n": len(traj),
        "acc": _r(float(np.mean([all(v) for v in traj.values()]))) if traj else None,
        "majority_acc": _r(float(np.mean([all(v) for v in traj_maj.values()]))) if traj else None,
    }
    report["queries"] = len({records[i]["query"] for i in np.flatnonzero(ev)})
    n_pairs, acc = sibling_ranking(records, p, ev)
    report["siblings"] = {"pairs": n_pairs, "acc": _r(acc), "policy_conf_acc": _r(sibling_ranking(records, conf, ev)[1])}
    return report


def sibling_ranking(records: list[dict], scores, mask) -> tuple[int, float | None]:
    """What a beam search compares: steps of one query that extend the same partial
    output in different ways. Over the pairs of such siblings with different labels:
    (number of pairs, share the scores rank right, ties counting half)."""
    groups: dict[tuple, dict[str, tuple[int, float]]] = {}
    for idx in rollout_rows(records):
        parent = ""
        for i in idx:
            r = records[i]
            if mask[i]:
                groups.setdefault((r["query"], parent), {})[r["partial"]] = (r["label"], float(scores[i]))
            parent = r["partial"]
    pairs = right = 0.0
    for children in groups.values():
        pos = [sc for y, sc in children.values() if y]
        neg = [sc for y, sc in children.values() if not y]
        for a in pos:
            for b in neg:
                pairs += 1
                right += 1.0 if a > b else 0.5 if a == b else 0.0
    return int(pairs), (right / pairs if pairs else None)


def markdown_table(report: dict) -> str:
    lines = [f"PRM on {report['split']} queries ({report['queries']} queries, "
             f"{report['trajectories']['n']} rollouts; checkpoint {report['checkpoint']})", ""]
    for name, title in (("steps", "all steps"), ("choice_steps", "choice steps (≥1 sampled token)")):
        lines += [f"**{title}**", "",
                  "| kind | n | pos rate | step acc | majority acc | bal acc | AUC | policy-conf AUC |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k, b in report[name].items():
            if not b["n"]:
                continue
            f = lambda v: "–" if v is None else f"{v:.3f}"
            lines.append(f"| {k} | {b['n']} | {f(b['pos_rate'])} | {f(b['acc'])} | {f(b['majority_acc'])} "
                         f"| {f(b['bal_acc'])} | {f(b['auc'])} | {f(b['policy_conf_auc'])} |")
        lines.append("")
    t = report["trajectories"]
    lines.append(f"trajectory accuracy: {t['acc']:.3f} (majority baseline {t['majority_acc']:.3f}) "
                 f"over {t['n']} rollouts" if t["n"] else "no trajectories")
    sib = report.get("siblings") or {}
    if sib.get("pairs"):
        lines.append(f"\nsibling ranking (what a beam compares: two steps of one query extending the same "
                     f"partial output, one right and one wrong): the PRM ranks {sib['acc']:.3f} of "
                     f"{sib['pairs']} pairs right, the policy's confidence {sib['policy_conf_acc']:.3f}")
    return "\n".join(lines)
