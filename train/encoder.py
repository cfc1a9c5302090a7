"""Fine-tune the cross-encoder reader (``reward.encoder``) on sibling sets.

The data are sibling sets (``train.gold_sets``): the candidates that extend one
parent, each labelled right or wrong. A batch holds whole sets (at most
``max_per_set`` candidates of each, the right ones first), and the loss has two
parts, each of which can be switched off to see what it adds:

* listwise: per set with a right and a wrong candidate, minus the log of the
  softmax mass its right candidates get: the model learns to rank siblings;
* pointwise: binary cross-entropy per candidate: the score stays a probability
  (the search compares candidates of different parents too).

A small share of the training queries (by base query) is kept aside to print a
validation line as training goes; the held-out live queries are never read.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from toolprm.bfcl import TRAIN_CATEGORIES, held_out
from toolprm.errors import ToolprmError
from toolprm.reward import generative
from toolprm.reward.encoder import ENCODER_CHECKPOINT, CrossEncoder, load, logits, new_model, save
from toolprm.reward.render import render

from . import gold_sets
from .gold_sets import read_queries, read_sets
from .readers import walk_sets
from .siblings import rank_metrics


@dataclass
class EncoderConfig:
    trained_layers: int = 2      # top BERT layers fine-tuned (the rest stay as shipped)
    steps: int = 1200            # optimizer steps
    batch: int = 32              # candidates per step (whole sets)
    max_per_set: int = 8         # candidates of one set per batch
    lr: float = 1e-4             # for the fine-tuned layers; the head gets 10x
    listwise: float = 1.0        # weight of the listwise loss (0: off)
    pointwise: float = 1.0       # weight of the BCE loss (0: off)
    max_length: int = 192        # tokens of a (query, step) pair
    val_share: float = 0.04      # training queries kept aside for the progress line
    seed: int = 0
    bf16: bool = True            # bf16 autocast for the forward pass (fp32 master weights)
    walk_share: float = 0.5      # share of the batches drawn from policy walks, where given
    init: str | None = None      # start from this checkpoint instead of the base model
    reader: str = "minilm"       # "minilm" (cross-encoder) or "generative" (SmolLM2 + LoRA, reward.generative)
    lora_rank: int = 8           # the generative reader's adapter rank
    lora_layers: int = 8         # ... and how many of its top layers get adapters


def _side(base: str, share: float, seed: int) -> str:
    h = int(hashlib.sha256(f"enc{seed}:{base}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < share else "train"


def load_sets(data: str | Path) -> list[dict]:
    """Every sibling set of a ``train sets`` folder with its candidates rendered
    (``pair``), and the query's base id."""
    queries = read_queries(data)
    out = []
    for s in read_sets(data):
        # the guard for every source of sets: live training-side queries only
        if s["category"] not in TRAIN_CATEGORIES or held_out(s["base"]):
            raise ToolprmError(f"{data}: set of {s['query']} ({s['category']}) is evaluation data (held out, "
                               "another benchmark or the test set); train on `toolprm train sets` without "
                               "--held-out or --nestful")
        q = queries[s["query"]]
        for c in s["candidates"]:
            c["pair"] = render(q["messages"], q["tools"], c["events"])
        out.append(s)
    if not out:
        raise ToolprmError(f"no sibling sets in {data}")
    return out


def _pick(s: dict, k: int, rng: random.Random) -> list[dict]:
    pos = [c for c in s["candidates"] if c["label"]]
    neg = [c for c in s["candidates"] if not c["label"]]
    rng.shuffle(pos)
    rng.shuffle(neg)
    take = pos[:max(1, k // 4)] if neg else pos[:k]
    return take + neg[:k - len(take)]


def batches(sets: list[dict], cfg: EncoderConfig, rng: random.Random):
    """Endless batches of whole (subsampled) sets, about ``cfg.batch`` candidates each."""
    while True:
        order = list(range(len(sets)))
        rng.shuffle(order)
        cur: list[list[dict]] = []
        n = 0
        for i in order:
            picked = _pick(sets[i], cfg.max_per_set, rng)
            cur.append(picked)
            n += len(picked)
            if n >= cfg.batch:
                yield cur
                cur, n = [], 0


def loss_of(z: torch.Tensor, groups: list[list[dict]], cfg: EncoderConfig) -> torch.Tensor:
    """Listwise (softmax over each set) plus pointwise BCE, as weighted in ``cfg``."""
    y = torch.tensor([float(c["label"]) for g in groups for c in g])
    total = z.sum() * 0.0   # in the graph even when no term applies (listwise only, no mixed set)
    if cfg.pointwise:
        total = total + cfg.pointwise * F.binary_cross_entropy_with_logits(z, y)
    if cfg.listwise:
        terms, at = [], 0
        for g in groups:
            zs, ys = z[at:at + len(g)], y[at:at + len(g)]
            at += len(g)
            if 0 < ys.sum() < len(g):
                terms.append(torch.logsumexp(zs, 0) - torch.logsumexp(zs[ys > 0], 0))
        if terms:
            total = total + cfg.listwise * torch.stack(terms).mean()
    return total


def validate(model, tok, sets: list[dict], cfg: EncoderConfig) -> dict:
    """Top-1 and pairwise accuracy (``siblings.rank_metrics``) on ``sets``."""
    pairs = [c["pair"] for s in sets for c in s["candidates"]]
    z = iter(logits(model, tok, pairs, max_length=cfg.max_length, bf16=cfg.bf16).tolist())
    scored = [{"candidates": [{"kind": c["kind"], "label": c["label"], "scores": {"val": next(z)}}
                              for c in s["candidates"]]} for s in sets]
    return rank_metrics(scored, "val")["all"]


def _split(sets: list[dict], cfg: EncoderConfig) -> tuple[list[dict], list[dict]]:
    train_sets = [s for s in sets if _side(s["base"], cfg.val_share, cfg.seed) == "train"]
    val_sets = [s for s in sets if _side(s["base"], cfg.val_share, cfg.seed) == "val"]
    return train_sets, random.Random(1).sample(val_sets, min(300, len(val_sets)))


def train(data: str | Path, out: str | Path, cfg: EncoderConfig, *, walks: list[str] = (),
          command: str = "", progress: bool = True) -> dict:
    """Fine-tune on ``data`` (a ``train sets`` folder) and, where given, on policy
    walks of training-side queries (``train siblings --train-side`` folders; a
    ``cfg.walk_share`` of the batches); save a checkpoint to ``out``."""
    if cfg.listwise <= 0 and cfg.pointwise <= 0:
        raise ToolprmError("at least one of the listwise and pointwise losses needs a positive weight")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    sets = load_sets(data)
    walk = [s for folder in walks for s in walk_sets(folder)]
    for s in walk:
        if held_out(s["query"]):
            raise ToolprmError(f"{s['query']} is a held-out query: walks to train on come from "
                               "`toolprm train siblings --train-side`")
        s["base"] = s["query"]
    train_sets, val_sets = _split(sets, cfg)
    walk_train, walk_val = _split(walk, cfg)
    init_manifest = None
    kind = generative.GenerativeReader if cfg.reader == "generative" else CrossEncoder
    if cfg.init:
        model, tok, init_manifest = load(cfg.init)
        if not isinstance(model, kind):
            raise ToolprmError(f"--init {cfg.init} is a {type(model).__name__}, not a {kind.__name__}")
        if cfg.reader == "minilm" and model.trained_layers != cfg.trained_layers:
            raise ToolprmError(f"--init {cfg.init} has {model.trained_layers} trained layers, not {cfg.trained_layers}")
    elif cfg.reader == "generative":
        model, tok = generative.new_model(cfg.lora_rank, cfg.lora_layers)
    else:
        model, tok = new_model(cfg.trained_layers)
    param_groups = model.param_groups(cfg.lr)
    trained = [p for g in param_groups for p in g["params"]]
    opt = torch.optim.AdamW(param_groups, weight_decay=0.01)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * max(0.0, (cfg.steps - i) / max(1, cfg.steps - warm)))
    t0 = time.perf_counter()
    seen = 0
    history = []
    model.train()
    it = batches(train_sets, cfg, rng)
    it_walk = batches(walk_train, cfg, rng) if walk_train else None
    running = None
    for step in range(1, cfg.steps + 1):
        groups = next(it_walk if it_walk and rng.random() < cfg.walk_share else it)
        enc = model.encode_pairs(tok, [c["pair"] for g in groups for c in g], cfg.max_length)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            z = model(**enc).float()
        loss = loss_of(z, groups, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        seen += z.numel()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if progress and (step % 50 == 0 or step == cfg.steps):
            el = time.perf_counter() - t0
            print(f"step {step}/{cfg.steps} loss {running:.4f} {seen} candidates {el:.0f}s "
                  f"(eta {el / step * (cfg.steps - step):.0f}s)", flush=True)
        if step % 400 == 0 or step == cfg.steps:
            model.eval()
            row = {"step": step, "loss": round(running, 4), "seconds": round(time.perf_counter() - t0, 1)}
            for name, vs in (("val", val_sets), ("walk_val", walk_val)):
                if vs:
                    v = validate(model, tok, vs, cfg)
                    row.update({f"{name}_top1": round(v["top1"], 4), f"{name}_pairwise": round(v["pairwise"], 4),
                                f"{name}_pairs": v["pairs"]})
                    if progress:
                        print(f"  {name} (training queries kept aside): top-1 {v['top1']:.3f}, pairwise "
                              f"{v['pairwise']:.3f} over {v['pairs']} pairs", flush=True)
            model.train()
            history.append(row)
    model.eval()
    manifest = {"config": asdict(cfg), "command": command, "data": str(data), "walks": [str(w) for w in walks],
                "data_counts": {"sets": len(sets), "train_sets": len(train_sets), "walk_sets": len(walk),
                                "walk_train_sets": len(walk_train),
                                "candidates": sum(len(s["candidates"]) for s in sets),
                                "candidates_read": seen},
                "max_length": cfg.max_length, "history": history,
                # how the starting checkpoint was made, so the chain can be rerun from scratch
                "init": None if init_manifest is None else {k: init_manifest.get(k) for k in
                                                            ("command", "config", "data", "walks", "init",
                                                             "train_seconds")},
                "train_seconds": round(time.perf_counter() - t0, 1)}
    (generative.save if cfg.reader == "generative" else save)(model, out, manifest)
    return manifest


#: The generative reader's defaults where they differ (LoRA wants a higher rate; its
#: passes cost several times the cross-encoder's, hence fewer, smaller steps).
GENERATIVE_DEFAULTS = {"lr": 2e-4, "batch": 16, "steps": 300, "max_length": 192}


def main(argv: list[str] | None = None, *, with_sets: bool = False, reader: str = "minilm") -> int:
    """``toolprm train encoder`` (``reader="generative"``: ``toolprm train generative``);
    ``with_sets`` (``toolprm train all --reader minilm``): build (or resume) the sibling
    sets first, so the checkpoint is made from scratch."""
    argv = list(sys.argv[1:] if argv is None else argv)
    d = EncoderConfig(reader=reader, **(GENERATIVE_DEFAULTS if reader == "generative" else {}))
    prog = (f"toolprm train all --reader {reader}" if with_sets else
            "toolprm train generative" if reader == "generative" else "toolprm train encoder")
    p = argparse.ArgumentParser(prog=prog, description=(
        "LoRA-tune the generative reader (reward.generative) on sibling sets." if reader == "generative"
        else __doc__.split("\n\n")[0]))
    if with_sets:
        p.add_argument("--masked", type=int, default=2, help="function-masked copies per query")
        p.add_argument("--jobs", type=int, default=1, help="worker processes for the sets")
    p.add_argument("--data", default="out/prm2/sets", help="a `toolprm train sets` folder")
    if reader == "generative":
        p.add_argument("--out", default="out/prm2/generative", help="checkpoint folder")
    else:
        p.add_argument("--out", default=str(ENCODER_CHECKPOINT), help="checkpoint folder (default: the shipped one)")
    for name in ("trained_layers", "lora_rank", "lora_layers", "steps", "batch", "max_per_set", "max_length", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "listwise", "pointwise", "val_share"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--walks", action="append", default=[], metavar="DIR",
                   help="policy walks of training-side queries (`train siblings --train-side`), repeatable")
    p.add_argument("--walk-share", type=float, default=d.walk_share, help="share of batches from the walks")
    p.add_argument("--init", default=None, help="start from this checkpoint (fine-tune further)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.steps < 1 or a.batch < 2 or a.max_per_set < 2 or not 0 <= a.trained_layers <= 6 or a.lora_rank < 1:
        raise ToolprmError("--steps and --lora-rank must be positive, --batch and --max-per-set at least 2, "
                           "--trained-layers between 0 and 6")
    cfg = EncoderConfig(**{k: getattr(a, k) for k in ("trained_layers", "lora_rank", "lora_layers", "steps", "batch",
                                                      "max_per_set", "max_length", "seed", "lr", "listwise",
                                                      "pointwise", "val_share", "walk_share", "init")},
                        bf16=not a.fp32, reader=reader)
    command = prog + " " + " ".join(shlex.quote(x) for x in argv)
    if with_sets:
        t0 = time.perf_counter()
        meta = gold_sets.build(a.data, masked=a.masked, seed=a.seed, jobs=a.jobs, progress=not a.no_progress,
                               command=command)
        print(f"sets: {meta['sets']} sets, {meta['candidates']} candidates, {time.perf_counter() - t0:.0f}s "
              f"→ {a.data}")
    m = train(a.data, a.out, cfg, walks=a.walks, command=command, progress=not a.no_progress)
    print(json.dumps({k: m[k] for k in ("data_counts", "history", "train_seconds")}, indent=1))
    return 0


__all__ = ["EncoderConfig", "train", "loss_of", "load_sets", "batches", "validate", "main"]
