"""Train the PRM head on step-labelled data.

Inputs are the frozen backbone's hidden states at each step (the policy's own,
stored by ``train data``; or recomputed with a separate backbone) plus the
step features of ``reward.prm.extra_features``.  The head learns P(step correct |
the steps before it are): it trains on the steps whose earlier steps are all
positive (``labels.prefix_correct``), and a partial output's score is the product
over its steps (``labels.chain``), checked against the prefix labels by ``train
eval``.  Loss: BCE, class-balanced
within each step kind (each kind keeps its share of the total weight; inside a
kind, positives and negatives weigh the same).  A balanced loss shifts the logit
by the log prior odds, so after training the per-kind prior log-odds of the
training labels are added back (``kind_bias``): the output is again an estimate
of P(step correct), and 0.5 is the accuracy threshold.

Model selection: 15% of the *training* queries are held out as a dev set for
early stopping; the validation queries are only used by ``train eval``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tqdm import tqdm

from toolprm.bfcl import split_of
from toolprm.errors import ToolprmError
from toolprm.grammar import STEP_KINDS as KINDS
from toolprm.reward.prm import N_EXTRA, PRM, PRMHead, save

from .data import load
from .evaluate import evaluate, markdown_table
from .features import backbone_hidden, features
from .labels import prefix_correct


@dataclass
class TrainConfig:
    head: str = "mlp"
    hidden: int = 64
    dropout: float = 0.5
    pca: int = 16                   # principal components kept of the hidden state (0: all)
    epochs: int = 60
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    dev_share: float = 0.15
    patience: int = 12
    seed: int = 0
    backbone: str | None = None     # None: the policy's hidden states stored with the data


def _weights(y: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    w = np.zeros(len(y), dtype=np.float32)
    for k in np.unique(kinds):
        m = kinds == k
        share = m.sum() / len(y)
        for c in (0, 1):
            mc = m & (y == c)
            if mc.any():
                w[mc] = share * len(y) / (2 if (m & (y == 1 - c)).any() else 1) / mc.sum()
    return w


def _prior_bias(y: np.ndarray, kinds: np.ndarray) -> torch.Tensor:
    bias = torch.zeros(len(KINDS))
    for j, k in enumerate(KINDS):
        m = kinds == k
        if m.any():
            p = (y[m].sum() + 1) / (m.sum() + 2)
            bias[j] = math.log(p / (1 - p))
    return bias


def fit(x: np.ndarray, y: np.ndarray, kinds: np.ndarray, dev: np.ndarray, cfg: TrainConfig,
        progress: bool = True) -> tuple[PRMHead, dict]:
    """Train a head; ``dev`` marks the early-stopping rows."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tr = ~dev
    if tr.sum() == 0 or len(np.unique(y[tr])) < 2:
        raise ToolprmError("PRM training data needs both positive and negative steps")
    # There are at most as many principal components as training rows (a tiny slice).
    pca = min(cfg.pca, x.shape[1] - N_EXTRA, int(tr.sum()))
    head = PRMHead(x.shape[1], cfg.head, cfg.hidden, cfg.dropout, pca)
    head.set_standardization(x[tr])
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.float32))
    wt = torch.from_numpy(_weights(y[tr], kinds[tr]))
    w_dev = torch.from_numpy(_weights(y[dev], kinds[dev])) if dev.any() else None
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    tr_idx = np.flatnonzero(tr)
    dev_idx = torch.from_numpy(np.flatnonzero(dev))
    best, best_state, best_epoch, bad = float("inf"), None, 0, 0
    history = []
    bar = tqdm(range(cfg.epochs), desc="prm epochs", disable=not progress)
    for epoch in bar:
        head.train()
        perm = rng.permutation(len(tr_idx))
        total = 0.0
        for s in range(0, len(perm), cfg.batch):
            b = perm[s:s + cfg.batch]
            rows = torch.from_numpy(tr_idx[b])
            loss = (loss_fn(head(xt[rows]), yt[rows]) * wt[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        train_loss = total / len(perm)
        if w_dev is not None:
            head.eval()
            with torch.no_grad():
                dev_loss = float((loss_fn(head(xt[dev_idx]), yt[dev_idx]) * w_dev).mean())
        else:
            dev_loss = train_loss
        history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 4), "dev_loss": round(dev_loss, 4)})
        bar.set_postfix(train=f"{train_loss:.3f}", dev=f"{dev_loss:.3f}")
        if dev_loss < best - 1e-4:
            best, best_epoch, bad = dev_loss, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.kind_bias.copy_(_prior_bias(y[tr], kinds[tr]))
    head.eval()
    return head, {"best_epoch": best_epoch, "best_dev_loss": round(best, 4), "history": history}


def train(data_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: TrainConfig, *,
          command: str = "", progress: bool = True) -> PRM:
    t0 = time.perf_counter()
    records, hidden, meta = load(data_dir)
    if cfg.backbone:
        hidden = backbone_hidden(data_dir, records, cfg.backbone, progress)
        backbone = {"kind": "separate", "name": cfg.backbone, "hidden_size": int(hidden.shape[1])}
    else:
        policy = meta.get("config", {}).get("model") or "smollm2"
        backbone = {"kind": "policy", "name": policy, "hidden_size": int(hidden.shape[1])}
    x = features(records, hidden, data_dir)
    y = np.array([r["label"] for r in records], dtype=np.int64)
    kinds = np.array([r["kind"] for r in records])
    is_train = np.array([r["split"] == "train" for r in records])
    dev = np.array([split_of(r["query_id"], cfg.dev_share, cfg.seed + 1) == "val" for r in records])
    # Steps after an earlier error are negative whatever they are: the head learns the rest.
    sel = np.flatnonzero(is_train & np.array(prefix_correct(records)))
    head, info = fit(x[sel], y[sel], kinds[sel], dev[sel], cfg, progress)
    manifest = {
        "name": "toolprm-prm",
        "description": "PRM head over frozen hidden states: P(last step correct) at a step boundary",
        "backbone": backbone,
        "config": asdict(cfg),
        "data": {"folder": str(data_dir), "n_steps": len(records),
                 "train_steps": int(is_train.sum()), "val_steps": int((~is_train).sum()),
                 "head_train_steps": len(sel),
                 "train_queries": len({r["query"] for r in records if r["split"] == "train"}),
                 "val_queries": len({r["query"] for r in records if r["split"] == "val"}),
                 "source": "BFCL v4 live categories (bfcl-eval); the non-live test categories never used",
                 "command": meta.get("command"), "data_config": meta.get("config"),
                 "label_balance": meta.get("label_balance"), "splits": meta.get("splits"),
                 "categories": meta.get("categories"), "seconds": meta.get("seconds")},
        "command": command,
        "seed": cfg.seed,
        "training": {k: v for k, v in info.items() if k != "history"},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    prm = PRM(head, manifest)
    save(prm, out_dir)
    Path(out_dir, "history.json").write_text(json.dumps(info["history"]) + "\n")
    # Validation metrics go into the manifest (and a markdown table beside it).
    if any(r["split"] == "val" for r in records):
        report = evaluate(data_dir, out_dir, features_cache=(records, x))
        manifest["metrics"] = report
        Path(out_dir, "metrics.md").write_text(markdown_table(report) + "\n")
    else:
        manifest["metrics"] = None
    manifest["seconds"] = round(time.perf_counter() - t0, 1)
    save(prm, out_dir)
    return prm
