"""A lean CPU forward pass for Llama-family policies, with forks that share the prompt.

transformers' generic forward moves bytes a beam need not move: every step
concatenates each layer's whole KV cache (prompt included) onto itself, half of
a batch-16 step on SmolLM2, and every forked row carries its own copy of the
prompt's keys and values. A batch-1 step is bound by reading the weights. ``LeanLM``
runs the same weights with:

- **the prompt's KV stored once** (``LeanCache``): every row attends to the one
  prompt copy and to its own short suffix; a fork copies only the suffix, and
  the suffix grows in place (capacity doubling), not by concatenation;
- **the previous prompt's KV kept**: a prompt that begins like it (the system
  preamble every call shares, a server's repeated tool list) takes the prefill
  chunks they share whole from there, bit for bit what computing them gives;
- **weights in the chosen ``dtype``** (``resolve_dtype``): "float32", "bfloat16",
  or "int4", which keeps a linear layer's weights in 4 bits (groups of 32, a
  scale and an offset each) *only where that is lossless*, as it is for weights a
  Q4_1 GGUF stored; those layers take bf16 inputs. Norms, rotary embeddings,
  attention and the residual stream stay in fp32, and so do the logits: the
  output head keeps fp32 weights in every dtype.

It covers the architectures it was checked on (``supports``: Llama, Qwen2, plain
rotary embeddings); anything else decodes through transformers. Its logits match
transformers' in fp32 to float tolerance (tests/test_lean.py).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from toolprm.errors import ToolprmError

DTYPES = ("auto", "float32", "bfloat16", "int4")
GROUP = 32          # int4 group size (Q4_1's block)
INT4_MAX_ROWS = 32  # above this many rows (a prefill) a packed layer uses its bf16 copy
# Prompt tokens per prefill pass, at fixed positions (see LeanLM.prefill): 64 first
# (a chat preamble fits), then 128 (a smaller chunk costs matmul efficiency: 64 made
# a prefill about 17% slower than one pass, 128 about 4%).
FIRST_CHUNK, PREFILL_CHUNK = 64, 128


def chunk_starts(n: int) -> list[int]:
    """Where the prefill chunks of an ``n``-token prompt begin."""
    return [0] + list(range(FIRST_CHUNK, n, PREFILL_CHUNK)) if n > FIRST_CHUNK else [0]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere); read once."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name as Linux reports it ("unknown" elsewhere); read once."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def resolve_dtype(dtype: str | None) -> str:
    """``dtype`` as one of "float32", "bfloat16", "int4". "auto" (or None, or the
    ``TOOLPRM_DTYPE`` environment variable when None) picks "int4" on a CPU with
    AVX512-BF16 or AMX-BF16, whose bf16 inputs the packed kernel needs to be
    fast, and "float32" elsewhere (measured: README, "Speed")."""
    dtype = dtype or os.environ.get("TOOLPRM_DTYPE") or "auto"
    if dtype not in DTYPES:
        raise ToolprmError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    flags = cpu_flags()
    return "int4" if {"avx512_bf16", "amx_bf16"} & flags else "float32"


def supports(model) -> str | None:
    """None if ``LeanLM`` can run ``model``; else why not."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in ("llama", "qwen2"):
        return f"architecture {getattr(cfg, 'model_type', type(model).__name__)!r} is not Llama or Qwen2"
    if getattr(cfg, "hidden_act", None) != "silu":
        return f"activation {cfg.hidden_act!r} is not silu"
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", None) != "default":
        return "rotary embeddings are not the plain kind"
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "mlp_bias", False):
        return "sliding-window attention or MLP biases"
    if next(model.parameters()).device.type != "cpu":
        return "the model is not on the CPU"
    return None


class Linear:
    """One linear layer's weights in the chosen dtype; fp32 in, fp32 out."""

    def __init__(self, layer: torch.nn.Linear, dtype: str):
        w = layer.weight.detach().float()
        self.bias = None if layer.bias is None else layer.bias.detach().float()
        self.out_features = w.shape[0]
        self.packed = self.scales = None
        if dtype == "float32":
            self.dense = w.contiguous()
            return
        self.dense = w.to(torch.bfloat16).contiguous()
        if dtype == "int4":
            self.packed, self.scales = _pack_int4(w)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.packed is not None and x.shape[0] <= INT4_MAX_ROWS:
            y = torch._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, GROUP, self.scales)
        else:
            y = F.linear(x.to(self.dense.dtype), self.dense)
        y = y.float()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


def _pack_int4(w: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``w`` as 4-bit codes with a scale and offset per group of 32 inputs, if that
    reproduces it exactly (to fp32 rounding); else (None, None)."""
    n, k = w.shape
    if k % GROUP or n % 16:  # the kernel's tiling
        return None, None
    g = w.reshape(n, k // GROUP, GROUP)
    lo, hi = g.amin(-1), g.amax(-1)
    step = (hi - lo) / 15
    step = torch.where(step > 0, step, torch.ones_like(step))
    q = ((g - lo[..., None]) / step[..., None]).round().clamp(0, 15)
    back = q * step[..., None] + lo[..., None]
    if (back - g).abs().max() > 1e-5 * float(g.abs().max()) + 1e-12:
        return None, None
    packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).reshape(n, k), 1)
    # the kernel computes (code - 8) * scale + zero
    scales = torch.stack([step.t(), (lo + 8 * step).t()], -1).contiguous().to(torch.bfloat16)
    return packed, scales


@dataclass
class _Layer:
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    gate: Linear
    up: Linear
    down: Linear
    norm_attn: torch.Tensor
    norm_mlp: torch.Tensor


class LeanLM:
    """The weights of a supported causal LM, ready for ``LeanCache`` decoding."""

    def __init__(self, model, dtype: str = "auto"):
        why = supports(model)
        if why:
            raise ToolprmError(f"LeanLM cannot run this model: {why}")
        self.dtype = resolve_dtype(dtype)
        cfg = model.config
        base = model.model
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.scaling = self.head_dim ** -0.5
        self.embed = base.embed_tokens.weight.detach().float()
        self.norm = base.norm.weight.detach().float()
        self.head = model.lm_head.weight.detach().float().contiguous()  # fp32 logits in every dtype
        self.inv_freq = base.rotary_emb.inv_freq.detach().float()
        self.rope_scale = float(base.rotary_emb.attention_scaling)
        self.layers = []
        for layer in base.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                *(Linear(x, self.dtype) for x in (a.q_proj, a.k_proj, a.v_proj, a.o_proj,
                                                   m.gate_proj, m.up_proj, m.down_proj)),
                layer.input_layernorm.weight.detach().float(),
                layer.post_attention_layernorm.weight.detach().float()))
        linears = [x for lay in self.layers for x in (lay.q, lay.k, lay.v, lay.o, lay.gate, lay.up, lay.down)]
        self.packed_layers = sum(x.packed is not None for x in linears)
        self.linear_layers = len(linears)
        self._lock = threading.Lock()
        self._last: tuple = ((), None, None)  # the previous prompt's ids, keys and values
        self.reused_tokens = 0                # of the last prefill

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos.float()[..., None] * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos() * self.rope_scale, emb.sin() * self.rope_scale

    @staticmethod
    def _rotate(x, cos, sin):
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rot * sin

    def _head(self, x: torch.Tensor, keep) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and normed hidden states of the last ``keep`` positions (0: all);
        with a mask (rows x width) for ``keep``, the logits of the marked positions
        only, packed row by row (count x vocab), and each row's last hidden state:
        the output head is the largest matrix, and padding needs none of it."""
        if isinstance(keep, torch.Tensor):
            h = self._rms(x, self.norm)
            return F.linear(h[keep], self.head), h[:, -1:]
        h = self._rms(x[:, -keep:] if keep else x, self.norm)
        return F.linear(h, self.head), h

    @torch.inference_mode()
    def prefill(self, ids: list[int], keep: int = 1) -> tuple["LeanCache", torch.Tensor, torch.Tensor]:
        """Run the prompt ``ids``: its KV cache, the logits of its last ``keep``
        positions (0: all) and their final (normed) hidden states.

        The prompt runs in chunks at fixed positions (``chunk_starts``), so
        a chunk's keys and values depend only on the tokens up to it, computed the
        same way every time. The previous prompt's are kept, and the chunks a new
        prompt shares with it whole (the system preamble every call shares; a
        server's repeated tool list) are taken from there: the result is the same
        to the bit as computing them again."""
        n = len(ids)
        with self._lock:
            last_ids, last_k, last_v = self._last
        same = 0
        limit = min(n - 1, len(last_ids)) if keep else 0  # keep=0 wants every position's logits
        while same < limit and ids[same] == last_ids[same]:
            same += 1
        starts = chunk_starts(n)
        reuse = max(b for b in starts + [n] if b <= same)  # whole chunks only
        keys = [k[:, :reuse] for k in last_k] if reuse else [None] * len(self.layers)
        values = [v[:, :reuse] for v in last_v] if reuse else [None] * len(self.layers)
        bounds = [b for b in starts if b >= reuse] + [n]
        x = torch.cat([self._prefill_chunk(ids[a:b], a, keys, values) for a, b in zip(bounds, bounds[1:])],
                      dim=1)
        logits, hidden = self._head(x, keep)
        keys = [k.contiguous() for k in keys]
        values = [v.contiguous() for v in values]
        with self._lock:  # read-only from here on: every cache made from it shares it
            self._last = (tuple(ids), keys, values)
        self.reused_tokens = reuse
        return LeanCache(self, keys, values), logits, hidden

    def _prefill_chunk(self, ids: list[int], start: int, keys: list, values: list) -> torch.Tensor:
        """Run ``ids`` at positions ``start``.. after the keys and values already in
        ``keys``/``values`` (per layer, extended in place); the chunk's last-layer states."""
        m = len(ids)
        x = self.embed[torch.tensor(ids)][None]
        cos, sin = self._rope(torch.arange(start, start + m))
        cos, sin = cos[None, None], sin[None, None]
        # query i (position start + i) sees keys 0 .. start + i
        mask = torch.arange(start + m)[None, :] <= torch.arange(start, start + m)[:, None]
        for li, lay in enumerate(self.layers):
            h = self._rms(x, lay.norm_attn)
            q = lay.q(h).view(1, m, self.heads, self.head_dim).transpose(1, 2)
            k = lay.k(h).view(1, m, self.kv_heads, self.head_dim).transpose(1, 2)
            v = lay.v(h).view(1, m, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            if keys[li] is not None:
                keys[li] = torch.cat([keys[li], k[0]], dim=1)
                values[li] = torch.cat([values[li], v[0]], dim=1)
            else:
                keys[li], values[li] = k[0], v[0]
            att = F.scaled_dot_product_attention(q, keys[li][None], values[li][None], attn_mask=mask,
                                                 enable_gqa=True, scale=self.scaling)
            x = x + lay.o(att.transpose(1, 2).reshape(1, m, -1))
            x = x + self._mlp(lay, x)
        return x

    def forget(self) -> None:
        """Drop the kept prompt (the next prefill computes every token)."""
        with self._lock:
            self._last = ((), None, None)

    def _mlp(self, lay: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = self._rms(x, lay.norm_mlp)
        return lay.down(F.silu(lay.gate(h)) * lay.up(h))

    @torch.inference_mode()
    def step(self, cache: "LeanCache", ids: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor,
             keep: int | torch.Tensor = 1, which: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``ids`` (rows x width; ``valid`` marks real tokens, the rest is
        padding) at positions ``pos`` to the rows ``which`` of ``cache`` (default:
        all; the others get a padding slot and no compute); returns the logits of the
        last ``keep`` positions of each fed row (0: all; a mask: those marked,
        packed; see ``_head``) and their hidden states."""
        rows, width = ids.shape
        d = self.head_dim
        x = self.embed[ids]
        cos, sin = self._rope(pos)
        cos, sin = cos[:, None], sin[:, None]
        if which is not None:
            full = torch.zeros(cache.rows, width, dtype=torch.bool)
            full[which] = valid.bool()
            start = cache.grow(width, full)
        else:
            start = cache.grow(width, valid)
        # key slot t of the suffix is visible to chunk position j if it holds a real
        # token and comes no later than j
        slots = torch.arange(cache.length, dtype=torch.long)
        seen = cache.valid if which is None else cache.valid[which]
        visible = seen[:, None, :] & (slots[None, None, :] <= (start + torch.arange(width))[None, :, None])
        bias = torch.zeros(rows, 1, 1, width, cache.length).masked_fill_(~visible[:, None, None], float("-inf"))
        for li, lay in enumerate(self.layers):
            h = self._rms(x, lay.norm_attn)
            q = self._rotate(lay.q(h).view(rows, width, self.heads, d).transpose(1, 2), cos, sin)
            k = self._rotate(lay.k(h).view(rows, width, self.kv_heads, d).transpose(1, 2), cos, sin)
            v = lay.v(h).view(rows, width, self.kv_heads, d).transpose(1, 2)
            cache.write(li, start, k, v, which)
            att = self._attend(cache, li, q, bias, which)
            x = x + lay.o(att)
            x = x + self._mlp(lay, x)
        return self._head(x, keep)

    def _attend(self, cache: "LeanCache", li: int, q: torch.Tensor, bias: torch.Tensor,
                which: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of ``q`` (rows x heads x width x dim) over the shared prompt and
        each row's own suffix, merged by their softmax normalizers."""
        rows, _, width, d = q.shape
        kv, g = self.kv_heads, self.heads // self.kv_heads
        q = q.view(rows, kv, g, width, d) * self.scaling
        # the prompt: every row's queries against its one copy, as one matmul per KV head
        qp = q.permute(1, 0, 2, 3, 4).reshape(kv, rows * g * width, d)
        sp = torch.bmm(qp, cache.prefix_k[li].transpose(1, 2))        # kv x (rows g w) x P
        mp = sp.amax(-1, keepdim=True)
        ep = torch.exp(sp - mp)
        op = torch.bmm(ep, cache.prefix_v[li])                       # kv x (rows g w) x d
        lp = ep.sum(-1, keepdim=True)
        to_rows = lambda t: t.view(kv, rows, g, width, -1).permute(1, 0, 2, 3, 4)  # noqa: E731
        op, lp, mp = to_rows(op), to_rows(lp), to_rows(mp)
        # the row's own suffix
        ks, vs = cache.suffix(li, which)                             # rows x kv x S x d
        ss = torch.matmul(q.reshape(rows, kv, g * width, d), ks.transpose(-1, -2))
        ss = ss.view(rows, kv, g, width, -1) + bias
        ms = torch.maximum(ss.amax(-1, keepdim=True), mp)
        es = torch.exp(ss - ms)
        os_ = torch.matmul(es.view(rows, kv, g * width, -1), vs).view(rows, kv, g, width, d)
        scale = torch.exp(mp - ms)
        out = (op * scale + os_) / (lp * scale + es.sum(-1, keepdim=True))
        return out.reshape(rows, self.heads, width, d).transpose(1, 2).reshape(rows, width, self.heads * d)


class LeanCache:
    """The KV cache of one prompt and its forks: the prompt's keys and values once
    (kv_heads x P x dim per layer), and per row a suffix (rows x kv_heads x S x dim)
    whose slot validity is ``valid`` (rows x S; padding slots are False)."""

    def __init__(self, lm: LeanLM, prefix_k: list[torch.Tensor], prefix_v: list[torch.Tensor]):
        self.prefix_k, self.prefix_v = prefix_k, prefix_v
        self.rows = 1
        self.length = 0
        self.capacity = 0
        self.valid = torch.zeros(1, 0, dtype=torch.bool)
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        self._shape = (lm.kv_heads, lm.head_dim)

    def grow(self, width: int, valid: torch.Tensor) -> int:
        """Make room for ``width`` more slots (``valid``: rows x width); returns where they start."""
        start = self.length
        need = start + width
        if need > self.capacity:
            self.capacity = max(64, 2 * self.capacity, need)
            layers = range(len(self.prefix_k))
            self._k = [self._moved(self._k[i] if self._k else None, start) for i in layers]
            self._v = [self._moved(self._v[i] if self._v else None, start) for i in layers]
        self.valid = torch.cat([self.valid, valid.bool()], dim=1)
        self.length = need
        return start

    def _moved(self, old: torch.Tensor | None, keep: int) -> torch.Tensor:
        """A buffer of the current capacity holding the first ``keep`` slots of ``old``."""
        kv, d = self._shape
        # zeros, not empty: a row not fed in a step leaves its slot unwritten, and
        # masked garbage (NaN) would still poison the attention's matmul
        new = torch.zeros(self.rows, kv, self.capacity, d)
        if old is not None and keep:
            new[:, :, :keep] = old[:, :, :keep]
        return new

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor,
              which: torch.Tensor | None = None) -> None:
        """Store the keys and values of rows ``which`` (default: all) at slots ``start``..."""
        end = start + k.shape[2]
        if which is None:
            self._k[layer][:, :, start:end] = k
            self._v[layer][:, :, start:end] = v
        else:
            self._k[layer][which, :, start:end] = k
            self._v[layer][which, :, start:end] = v

    def suffix(self, layer: int, which: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The suffix keys and values of rows ``which`` (default: all; else a copy)."""
        k, v = self._k[layer][:, :, :self.length], self._v[layer][:, :, :self.length]
        return (k, v) if which is None else (k[which], v[which])

    def select(self, idx: torch.Tensor) -> None:
        """Keep rows ``idx`` (repeats fork a row): copies only the suffixes, and of
        them only the slots some kept row uses (a chunk's padding, the tokens of
        dropped rows go)."""
        valid = self.valid[idx]
        used = valid.any(0)
        cols = None if bool(used.all()) else used.nonzero().squeeze(1)
        if cols is not None:
            valid = valid[:, cols]
        self._k = [self._copy_rows(t, idx, cols, valid.shape[1]) for t in self._k]
        self._v = [self._copy_rows(t, idx, cols, valid.shape[1]) for t in self._v]
        self.valid, self.length, self.rows = valid, valid.shape[1], len(idx)

    def _copy_rows(self, t: torch.Tensor, idx: torch.Tensor, cols, length: int) -> torch.Tensor:
        new = torch.zeros(len(idx), *t.shape[1:], dtype=t.dtype)  # zeros: see _moved
        rows = t[idx, :, :self.length]
        new[:, :, :length] = rows if cols is None else rows[:, :, cols]
        return new

    def slot_bytes(self) -> int:
        """Bytes of one row's keys and values at one position, over all layers."""
        kv, d = self._shape
        return 2 * len(self.prefix_k) * kv * d * self.prefix_k[0].element_size()

    def nbytes(self) -> int:
        """Bytes held: the prompt once, plus every row's suffix buffer."""
        return sum(t.numel() * t.element_size() for t in self.prefix_k + self.prefix_v + self._k + self._v)
