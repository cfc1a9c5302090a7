"""``toolprm train {data,prm,eval,all}``.

argv starts at the subcommand word (``["data", "--queries", "50"]``).

* ``data``: rollouts on BFCL's live categories → step-labelled JSONL + hidden states.
* ``prm``:  train the PRM head on a data folder → a checkpoint folder.
* ``eval``: metrics of a checkpoint on the data folder's validation queries.
* ``all``:  the three in a row; with the defaults it regenerates the shipped
  checkpoint (``reward/checkpoint``) from scratch. ``all --reader minilm``: the
  cross-encoder's pipeline instead (``sets``, then ``encoder``) into
  ``reward/encoder_checkpoint``.
* ``sets``: sibling sets along right answers of every usable live query and its
  masked copies, for the text readers (``train.gold_sets``).
* ``encoder``: fine-tune the cross-encoder reader on those sets (``train.encoder``).
* ``generative``: LoRA-tune the generative reader (SmolLM2 saying "+" or "-",
  ``reward.generative``) on the same sets, through the same loop.
* ``readers``: the readers compared on the same held-out sibling sets (``train.readers``).
* ``siblings``: how well the PRM and the policy rank the sets of candidates the
  search compares, on held-out live queries (``train.siblings``).
* ``ends``: the text end reader (close the list or call again), trained on gold
  call lists of live and synthetic multi-call queries (``train.ends``).
* ``calibrate``: the shift of the head's ``[]`` score against a first call's, fit on
  a ``siblings`` folder (``train.calibrate``); ``prm`` and ``all`` drop it with the
  weights it was fit for.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from toolprm.engine.lean import DTYPES, resolve_dtype
from toolprm.errors import ToolprmError
from toolprm.reward.prm import SHIPPED

from . import calibrate, encoder, ends, gold_sets, readers, siblings
from .data import DataConfig, build
from .evaluate import evaluate, markdown_table
from .prm import TrainConfig, train

DEFAULT_DATA = "out/prm/data"
#: What ``train all --reader R`` rebuilds: the hidden-state head (reward/checkpoint,
#: the default) or the cross-encoder (reward/encoder_checkpoint).
READERS = ("head", "minilm")
DEFAULT_CKPT = "out/prm/checkpoint"   # `train prm` (experiments)
# `train all` and `train eval` default to the shipped checkpoint folder, reward/checkpoint.


def _threads(n: int) -> None:
    # On a shared 2-core machine one intra-op thread is several times faster than two
    # fighting other jobs for the cores (OpenMP spin-waits).
    import torch
    if n > 0:
        torch.set_num_threads(n)


def _data_args(p: argparse.ArgumentParser) -> None:
    d = DataConfig()
    p.add_argument("--queries", type=int, default=d.queries, help="queries in all (train + val)")
    p.add_argument("--rollouts", type=int, default=d.rollouts, help="samples per query")
    p.add_argument("--no-empty-rollout", dest="empty_rollout", action="store_false",
                   help="leave out the extra rollout per query that answers [] (on by default)")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--mask-share", type=float, default=d.mask_share)
    p.add_argument("--val-share", type=float, default=d.val_share)
    p.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--max-step-tokens", type=int, default=d.max_step_tokens,
                   help="cut a rollout whose step samples more tokens than this")
    p.add_argument("--model", default=None, help="policy (default: the built-in SmolLM2)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="the policy's weights for the rollouts (see README, Speed; default auto)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted data run")
    p.add_argument("--jobs", type=int, default=1,
                   help="Ray workers for the rollouts (pip install 'toolprm[scale]'), each on an "
                        "interleaved share of the queries in DATA/shard-K (the same data as one process; "
                        "resume with the same --jobs)")
    p.add_argument("--address", default=None,
                   help="the Ray cluster for the --jobs workers: 'auto' or host:port (default: a local "
                        "one; its machines must share DATA's disk)")


def _prm_args(p: argparse.ArgumentParser) -> None:
    t = TrainConfig()
    p.add_argument("--head", choices=["linear", "mlp"], default=t.head)
    p.add_argument("--hidden", type=int, default=t.hidden, help="MLP width")
    p.add_argument("--dropout", type=float, default=t.dropout)
    p.add_argument("--pca", type=int, default=t.pca,
                   help="principal components of the hidden state fed to the head (0: all)")
    p.add_argument("--epochs", type=int, default=t.epochs)
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--backbone", default=None,
                   help="a separate backbone (any causal LM name/path): hidden states are "
                        "recomputed with it; default: the policy's own from the data")


def _data_config(a):
    return DataConfig(queries=a.queries, rollouts=a.rollouts, empty_rollout=a.empty_rollout,
                      temperature=a.temperature,
                      mask_share=a.mask_share, val_share=a.val_share, seed=a.seed,
                      max_prompt_tokens=a.max_prompt_tokens, max_new_tokens=a.max_new_tokens,
                      max_step_tokens=a.max_step_tokens, model=a.model,
                      dtype=resolve_dtype(a.dtype))


def _train_config(a):
    return TrainConfig(head=a.head, hidden=a.hidden, dropout=a.dropout, pca=a.pca, epochs=a.epochs, lr=a.lr,
                       weight_decay=a.weight_decay, seed=a.seed, backbone=a.backbone)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["siblings"]:
        return siblings.main(argv[1:])
    if argv[:1] == ["sets"]:
        return gold_sets.main(argv[1:])
    if argv[:1] == ["encoder"]:
        return encoder.main(argv[1:])
    if argv[:1] == ["generative"]:
        return encoder.main(argv[1:], reader="generative")
    if argv[:1] == ["readers"]:
        return readers.main(argv[1:])
    if argv[:1] == ["calibrate"]:
        return calibrate.main(argv[1:])
    if argv[:1] == ["ends"]:
        return ends.main(argv[1:])
    if argv[:1] == ["all"] and "--reader" in argv:
        i = argv.index("--reader")
        reader = argv[i + 1] if i + 1 < len(argv) else ""
        if reader not in READERS:
            raise ToolprmError(f"--reader must be one of {', '.join(READERS)}, got {reader!r}")
        argv = argv[:i] + argv[i + 2:]
        if reader == "minilm":
            return encoder.main(argv[1:], with_sets=True)
    p = argparse.ArgumentParser(prog="toolprm train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pd = sub.add_parser("data", help="rollouts → step-labelled data")
    pp = sub.add_parser("prm", help="train the PRM head")
    pe = sub.add_parser("eval", help="evaluate a checkpoint on validation queries")
    pa = sub.add_parser("all", help="data + prm + eval")
    for q in (pd, pp, pe, pa):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
        q.add_argument("--no-progress", action="store_true")
    for q in (pd, pp, pe, pa):
        q.add_argument("--data", default=DEFAULT_DATA, help="data folder")
    pp.add_argument("--out", default=DEFAULT_CKPT, help="checkpoint folder")
    for q in (pe, pa):
        q.add_argument("--out", default=str(SHIPPED), help="checkpoint folder (default: the shipped one)")
    _data_args(pd)
    _data_args(pa)
    _prm_args(pp)
    _prm_args(pa)
    pe.add_argument("--report", default=None, help="write the metrics table (markdown) here")
    a = p.parse_args(argv)
    _threads(a.threads)
    progress = not a.no_progress
    command = "toolprm train " + " ".join(shlex.quote(x) for x in argv)
    if a.cmd in ("data", "all"):
        t0 = time.perf_counter()
        if a.jobs < 1:
            raise ToolprmError("--jobs must be a positive integer")
        meta = build(a.data, _data_config(a), resume=getattr(a, "resume", False), progress=progress,
                     command=command, jobs=a.jobs, threads=a.threads or None, address=a.address)
        print(json.dumps({k: meta[k] for k in ("n_queries", "n_steps", "splits", "label_balance",
                                               "skipped", "seconds")}, indent=1))
        print(f"data: {time.perf_counter() - t0:.0f}s → {a.data}")
    if a.cmd in ("prm", "all"):
        t0 = time.perf_counter()
        train(a.data, a.out, _train_config(a), command=command, progress=progress)
        print(f"prm: {time.perf_counter() - t0:.0f}s → {a.out}")
    if a.cmd == "all" and Path(a.out, "metrics.md").exists():
        print(Path(a.out, "metrics.md").read_text())
    if a.cmd == "eval":
        report = evaluate(a.data, a.out)
        table = markdown_table(report)
        print(table)
        target = getattr(a, "report", None)
        if target:
            Path(target).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
