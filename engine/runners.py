"""What runs the model for a ``Decoder``: one prompt's KV cache and its forked rows.

A runner prefills the prompt once (``__init__``), feeds chunks of tokens to every
row (``feed``: rows x width ids, ``valid`` marking real tokens among the left
padding, per-row positions) and keeps or forks rows (``select``). Two kinds:

- ``LeanRunner`` over ``engine.lean.LeanLM``: the prompt's KV stored once and
  shared by every row; the default wherever ``LeanLM`` supports the model;
- ``TransformersRunner`` over a transformers model: its own cache, which holds a
  copy of the prompt per row; any architecture.

Both return fp32 logits and the last layer's (normed) hidden states, and count
the KV-cache traffic (``kv_written``: bytes written into the cache, by feeds and
forks; ``kv_peak``: the most bytes it held) for ``toolprm bench decode``.
"""
from __future__ import annotations

import torch

from .kv import cache_kwarg, cache_of
from .lean import LeanLM


def runner_for(model, prompt_ids: list[int], want_hidden: bool):
    """A runner for ``model`` (a ``LeanLM`` or a transformers model), prompt prefilled."""
    if isinstance(model, LeanLM):
        return LeanRunner(model, prompt_ids)
    return TransformersRunner(model, prompt_ids, want_hidden)


class _Counted:
    kv_written = 0
    kv_peak = 0

    def _count(self, written: int) -> None:
        self.kv_written += written
        self.kv_peak = max(self.kv_peak, self.nbytes())


class LeanRunner(_Counted):
    def __init__(self, lm: LeanLM, prompt_ids: list[int]):
        self.lm = lm
        self.cache, logits, hidden = lm.prefill(prompt_ids)
        self.first = (logits[0, -1], hidden[0, -1])
        self._count(self.nbytes())

    def feed(self, ids, valid, pos, keep: int | torch.Tensor = 1, which: torch.Tensor | None = None):
        """Feed the rows ``which`` (default: all; the others wait, at no compute).
        Logits (rows x the last ``keep`` positions x vocab, fp32; with a mask for
        ``keep``, the marked positions', packed row by row) and each row's last hidden
        state, for the rows fed."""
        before = self.cache.capacity
        logits, hidden = self.lm.step(self.cache, ids, valid, pos, keep, which)
        per_slot = self.cache.slot_bytes()
        # the new slots of every row, plus the old ones where the buffers grew
        self._count(per_slot * self.cache.rows * (ids.shape[1] + (before if self.cache.capacity > before else 0)))
        return logits, hidden[:, -1]

    def select(self, idx: torch.Tensor) -> None:
        self.cache.select(idx)
        self._count(self.cache.slot_bytes() * len(idx) * self.cache.length)

    def nbytes(self) -> int:
        return self.cache.nbytes()


class TransformersRunner(_Counted):
    def __init__(self, model, prompt_ids: list[int], want_hidden: bool):
        self.model = model
        self.want_hidden = want_hidden
        self.device = next(model.parameters()).device
        ids = torch.tensor([prompt_ids], device=self.device)
        self.attn = torch.ones_like(ids)
        out = self._run(ids, None, torch.arange(len(prompt_ids), device=self.device)[None], 1)
        self.cache = cache_of(out)
        self.first = (out.logits[0, -1].float(),
                      out.hidden_states[-1][0, -1] if want_hidden else None)
        self._count(self.nbytes())

    @torch.inference_mode()
    def _run(self, ids, cache, pos, keep):
        return self.model(input_ids=ids, attention_mask=self.attn, position_ids=pos, use_cache=True,
                          output_hidden_states=self.want_hidden, logits_to_keep=keep,
                          **{cache_kwarg(self.model): cache})

    def feed(self, ids, valid, pos, keep: int | torch.Tensor = 1, which: torch.Tensor | None = None):
        if which is not None:  # transformers' cache takes every row: the others get padding
            ids, valid, pos, keep = (_spread(t, which, self.attn.shape[0]) for t in (ids, valid, pos, keep))
        self.attn = torch.cat([self.attn, valid.long().to(self.device)], dim=1)
        out = self._run(ids.to(self.device), self.cache, pos.to(self.device),
                        0 if isinstance(keep, torch.Tensor) else keep)
        self.cache = cache_of(out)
        self._count(self.nbytes())  # each layer's keys and values are concatenated anew
        hidden = out.hidden_states[-1][:, -1] if self.want_hidden else None
        logits = out.logits.float()
        if isinstance(keep, torch.Tensor):
            logits = logits[keep.to(self.device)]
        elif which is not None:
            logits = logits[which.to(self.device)]
        if which is not None and hidden is not None:
            hidden = hidden[which.to(self.device)]
        return logits, hidden

    def select(self, idx: torch.Tensor) -> None:
        idx = idx.to(self.device)
        self.cache.reorder_cache(idx)
        self.attn = self.attn[idx]
        self._count(self.nbytes())  # every row is copied, prompt included

    def nbytes(self) -> int:
        total = 0
        for layer in getattr(self.cache, "layers", []):
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total


def _spread(t, which: torch.Tensor, rows: int):
    """``t`` (one line per row of ``which``) laid out over all ``rows`` rows, zeros
    (padding, position 0, not kept) elsewhere; an int ``keep`` passes through."""
    if not isinstance(t, torch.Tensor):
        return t
    out = torch.zeros((rows,) + tuple(t.shape[1:]), dtype=t.dtype)
    out[which] = t
    return out
