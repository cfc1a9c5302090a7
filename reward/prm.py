"""The process reward model: a small head over a frozen backbone's hidden states.

Features of one step (a partial output that ends at a step boundary):

* the backbone's last-layer hidden state where the step ends — by default the
  *policy's own*, which the decoding loop already computed (``Candidate.hidden``),
  so scoring costs no extra forward pass;
* the step kind (name / key / value / end) one-hot;
* the policy's mean log-prob of the tokens it sampled in the step, and whether
  the step was forced (no sampled token);
* the call index (clipped).

The head (linear or a 1-hidden-layer MLP, standardized inputs) returns the
logit of P(this step correct | every step before it is).  The score of a
partial output is P(every step so far correct): the product of the head's
scores of each of its steps.  Most wrong steps only inherit an earlier error
(a key after a wrong function name), so the head learns the few decisions that
can go wrong on their own, and the product carries them forward.
``PRMScorer`` plugs it into the search (``needs_hidden = True``; the decoder
keeps each step's hidden state, ``Candidate.event_hidden``); ``BackbonePRM``
runs a separate causal LM over (prompt, partial output) to get the hidden
states instead.

Checkpoint: a folder with ``model.safetensors`` (the head's tensors) and
``manifest.json`` (architecture, backbone, data, command, seed, metrics).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from toolprm.engine.kv import cache_kwarg, cache_of
from toolprm.engine.models import Policy, get_policy, load_model
from toolprm.engine.query import prompt_ids as encode_prompt
from toolprm.errors import GenerationError, ToolprmError
from toolprm.grammar import STEP_KINDS as KINDS

from .ends import ENDS_SHIPPED, EndReader, calls_before, load_end_reader
from .features import N_TEXT, TEXT_FEATURES, ToolIndex, text_features

#: The step features, in the order ``extra_features`` returns them.
STEP_FEATURES = tuple(f"kind_{k}" for k in KINDS) + ("step_mean_logprob", "step_forced", "call_index")
N_STEP = len(STEP_FEATURES)
N_EXTRA = N_STEP + N_TEXT  # + the text features of reward.features
#: Every feature after the hidden state, by name: a checkpoint records them, load checks them.
FEATURES = STEP_FEATURES + TEXT_FEATURES
SHIPPED = Path(__file__).resolve().parent / "checkpoint"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
#: The shift of the ``[]`` score (``train.calibrate``), fit for one set of weights.
CALIBRATION = "calibration.json"
#: What the head's score means: P(step correct | the steps before it are), chained by product.
FORMAT = "step-given-prefix/1"


def extra_features(kind: str, step_logprob: float, step_tokens: int, call: int) -> list[float]:
    onehot = [1.0 if kind == k else 0.0 for k in KINDS]
    mean_lp = step_logprob / step_tokens if step_tokens > 0 else 0.0
    return onehot + [max(mean_lp, -20.0), 1.0 if step_tokens == 0 else 0.0, min(call, 3) / 3.0]


def feature_matrix(hidden: np.ndarray, kinds: Sequence[str], logprobs: Sequence[float],
                   sampled: Sequence[int], calls: Sequence[int], text: np.ndarray | None = None) -> np.ndarray:
    extra = np.array([extra_features(k, lp, n, c) for k, lp, n, c in zip(kinds, logprobs, sampled, calls)],
                     dtype=np.float32).reshape(len(kinds), N_STEP)
    if text is None:
        text = np.zeros((len(kinds), N_TEXT), dtype=np.float32)
    return np.concatenate([np.asarray(hidden, dtype=np.float32), extra,
                           np.asarray(text, dtype=np.float32).reshape(len(kinds), N_TEXT)], axis=1)


class PRMHead(nn.Module):
    """Standardize → project the hidden state onto its first ``pca`` principal
    components (0: keep it whole) → concatenate the step and text features →
    (linear | Linear-GELU-Dropout-Linear) → logit, plus the per-kind prior bias."""

    def __init__(self, in_dim: int, head: str = "mlp", hidden: int = 64, dropout: float = 0.5,
                 pca: int = 0):
        super().__init__()
        if head not in ("linear", "mlp"):
            raise ToolprmError(f"PRM head must be 'linear' or 'mlp', got {head!r}")
        d = in_dim - N_EXTRA
        if d < 1 or not 0 <= pca <= d:
            raise ToolprmError(f"PRM head: bad sizes (input {in_dim}, hidden state {d}, pca {pca})")
        self.in_dim, self.head, self.hidden, self.pca = in_dim, head, hidden, pca
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.register_buffer("proj", torch.zeros(d, pca) if pca else torch.zeros(0))
        # Per-kind prior log-odds added to the logit (set after class-balanced training).
        self.register_buffer("kind_bias", torch.zeros(len(KINDS)))
        width = (pca or d) + N_EXTRA
        if head == "linear":
            self.net = nn.Linear(width, 1)
        else:
            self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, 1))

    def set_standardization(self, x: np.ndarray) -> None:
        """Input statistics (and the principal components of the hidden state) from
        the training features."""
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std < 1e-4] = 1.0
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))
        if self.pca:
            d = self.in_dim - N_EXTRA
            z = (x[:, :d] - mean[:d]) / std[:d]
            _, _, vt = np.linalg.svd(z.astype(np.float64), full_matrices=False)
            comps = vt[: self.pca].T
            # unit variance after projection
            scale = (z @ comps).std(axis=0)
            scale[scale < 1e-6] = 1.0
            self.proj.copy_(torch.from_numpy((comps / scale).astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.in_dim - N_EXTRA
        z = (x - self.mean) / self.std
        h = z[..., :d] @ self.proj if self.pca else z[..., :d]
        logit = self.net(torch.cat([h, z[..., d:]], dim=-1)).squeeze(-1)
        return logit + x[..., d:d + len(KINDS)] @ self.kind_bias


def shifted(p: float, log_odds: float) -> float:
    """``p`` with ``log_odds`` added to its logit."""
    if not log_odds:
        return p
    p = min(max(p, 1e-12), 1 - 1e-12)
    return 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) + log_odds)))


def is_empty_list(ev) -> bool:
    """Whether step ``ev`` answers ``[]``: it ends the list before any call."""
    return ev.kind == "end" and ev.call == 0


@dataclass
class PRM:
    """A loaded PRM: the head, its manifest, and the shift of its ``[]`` score
    (``train.calibrate``; 0 where the folder has no calibration)."""
    head: PRMHead
    manifest: dict
    empty_log_odds: float = 0.0

    @property
    def hidden_size(self) -> int:
        return self.head.in_dim - N_EXTRA

    @torch.inference_mode()
    def predict(self, features: np.ndarray) -> np.ndarray:
        self.head.eval()
        x = torch.from_numpy(np.asarray(features, dtype=np.float32))
        return torch.sigmoid(self.head(x)).numpy()


def save(prm: PRM, folder: str | os.PathLike) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in prm.head.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS))
    (out / CALIBRATION).unlink(missing_ok=True)  # fit for the weights just replaced
    manifest = dict(prm.manifest)
    manifest["architecture"] = {"format": FORMAT, "in_dim": prm.head.in_dim, "head": prm.head.head,
                                "hidden": prm.head.hidden, "pca": prm.head.pca, "kinds": list(KINDS),
                                "n_extra": N_EXTRA, "n_text": N_TEXT, "features": list(FEATURES)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def load(folder: str | os.PathLike | None = None) -> PRM:
    p = Path(folder) if folder is not None else SHIPPED
    if not (p / WEIGHTS).exists() or not (p / MANIFEST).exists():
        raise ToolprmError(f"no PRM checkpoint in {p} (needs {WEIGHTS} and {MANIFEST}); "
                           "train one with `toolprm train all`")
    manifest = json.loads((p / MANIFEST).read_text())
    arch = manifest.get("architecture", {})
    if arch.get("format") != FORMAT or list(arch.get("kinds", ())) != list(KINDS):
        raise ToolprmError(f"PRM checkpoint {p} was written by an incompatible version "
                           f"(format {arch.get('format')!r}, step kinds {arch.get('kinds')}; this "
                           f"version reads {FORMAT!r}); retrain it with `toolprm train prm`")
    names = list(arch.get("features", ()))
    if names != list(FEATURES):
        missing = [f for f in FEATURES if f not in names]
        extra = [f for f in names if f not in FEATURES]
        raise ToolprmError(f"PRM checkpoint {p} was trained on other features than this version "
                           f"computes (missing {missing}, unknown {extra}"
                           f"{', same names in another order' if not missing and not extra else ''}); "
                           "retrain it with `toolprm train prm`")
    head = PRMHead(arch["in_dim"], arch.get("head", "mlp"), arch.get("hidden", 64), pca=arch.get("pca", 0))
    head.load_state_dict(load_file(str(p / WEIGHTS)))
    head.eval()
    return PRM(head, manifest, _calibration(p))


def weights_sha256(folder: str | os.PathLike) -> str:
    """The sha256 of a checkpoint folder's weights (what a calibration was fit for)."""
    return hashlib.sha256((Path(folder) / WEIGHTS).read_bytes()).hexdigest()


def _calibration(folder: Path) -> float:
    """The ``[]`` shift in ``folder``, checked against the weights it was fit for."""
    path = folder / CALIBRATION
    if not path.exists():
        return 0.0
    cal = json.loads(path.read_text())
    if cal.get("weights_sha256") != weights_sha256(folder):
        raise ToolprmError(f"{path} was fit for other weights than {folder / WEIGHTS}: refit it with "
                           "`toolprm train calibrate --walks <a train siblings folder> --checkpoint "
                           f"{folder}`, or delete it")
    return float(cal["empty_log_odds"])


def _step_rows(c, hiddens: Sequence[Any], index: ToolIndex) -> list[list[float]]:
    """Feature rows of every step of a candidate (one per event; ``hiddens[j]`` is
    the hidden state where step j ended)."""
    rows = []
    for j, ev in enumerate(c.events):
        lp, n = c.event_steps[j] if j < len(c.event_steps) else (c.step_logprob, c.step_tokens)
        h = hiddens[j]
        h = h.detach().float().cpu().numpy() if isinstance(h, torch.Tensor) else np.asarray(h)
        rows.append(list(h.reshape(-1)) + extra_features(ev.kind, lp, n, ev.call)
                    + text_features(index, c.events[:j + 1]))
    return rows


#: Who reads a value step: the head, or the policy's own confidence in the value's
#: tokens (``values="policy"``, the "hybrid" scorer). On held-out policy walks the
#: policy ranks sibling values far better than the head (top-1 0.78 against 0.60,
#: results/readers-v3), while the head ranks closing, calling and ``[]`` better.
VALUE_READERS = ("head", "policy")


def step_confidence(c, j: int) -> float:
    """The policy's geometric-mean probability of the tokens it chose in step ``j``
    of candidate ``c`` (1 for a step it did not choose a token of: all forced)."""
    lp, n = c.event_steps[j] if j < len(c.event_steps) else (c.step_logprob, c.step_tokens)
    return math.exp(lp / n) if n else 1.0


#: Who reads the end decision, the choice after a call between closing the list and
#: beginning another call (with each tool): the head, the policy (``ends="policy"``),
#: or the text end reader (``ends="text"``, ``reward.ends``: closing gets 1 − P(more),
#: beginning a call with a tool P(more) times the head's score of that tool over the
#: best sibling tool's, so the head still picks the tool and the reader the ending).
#: The policy's factor for the step is its probability of the alternative taken (of its
#: tokens together) over that of the likeliest alternative of the same parent: the
#: choice the policy prefers costs nothing, another its odds against it. (Its plain
#: probability would lower every call list where the policy is unsure how to end it,
#: and hand the search to ``[]``, whose score does not pay it.) "auto": the policy
#: where ``POLICIES_READING_ENDS`` names it, else the head.
ENDS_READERS = ("head", "policy", "text", "auto")
#: The policies whose own odds read the end decision in the search, each chosen by a
#: rule stated before its runs: more of 60 live cases right with its odds than with the
#: head, a tie keeping the head. Qwen2.5-Coder-1.5B: 21 against 20 (1 / 0 cases apart,
#: McNemar p = 1, so a choice by the rule, not a shown gain; wrong call counts 22 against
#: 26; results/qwen15-live-ends). Not Qwen2.5-Coder-0.5B: 14 against 14
#: (results/qwen-live-ends), though its P(another call) has an AUC of 0.85 on gold
#: prefixes of live queries (results/ends-qwen0.5b). Not SmolLM2: its odds got 44 of 184
#: against the head's 50 (results/live-ends-48). The text reader tied the head, 50 of 184
#: (results/live-ends-text-48), and on 150 coordinated multi-call queries built from
#: held-out live ones got 1 right against 0 (results/coordinated-ends), so "auto" keeps
#: the head for every other policy.
POLICIES_READING_ENDS: frozenset[str] = frozenset({"qwen2.5-coder-1.5b"})


def is_end_decision(ev) -> bool:
    """Whether step ``ev`` decides, after a call, to close the list or (its name
    step) to begin another call."""
    return ev.call >= 1 and ev.kind in ("end", "name")


#: Who reads a key step (which parameter comes next, or none: the arguments close):
#: the head, the policy (``keys="policy"``: its odds against its likeliest sibling, as
#: for ends), or "auto": the policy where ``POLICIES_READING_KEYS`` names it, else the
#: head. Why it matters: the order of the keys sets which optional parameters are
#: written at all. With Qwen2.5-Coder-1.5B and the head picking keys, 7 of 12
#: live_parallel answers set the optional "unit" to "celsius", 6 writing it before
#: "location", where the policy alone writes "location" first (results/qwen15-live-ends).
KEYS_READERS = ("head", "policy", "auto")
#: The policies whose own odds read key steps, each chosen by a rule stated before its
#: runs (more of 60 live cases right than with the head; a tie keeps the head).
#: Qwen2.5-Coder-1.5B: 23 against 21 (5 / 3 cases apart, McNemar p = 0.73, so a choice by
#: the rule, not a shown gain), all of it on live_irrelevance (9 against 7: more ``[]``);
#: the relevant categories tie, 14 against 14, and ``[]`` answers 18 of their 48 queries
#: against 8 (results/qwen15-live-keys). Not measured for other policies.
POLICIES_READING_KEYS: frozenset[str] = frozenset({"qwen2.5-coder-1.5b"})


def _policy_odds(candidates: Sequence[Any], memo: dict, reads) -> dict[tuple[int, int], float]:
    """Per (candidate, step) where ``reads(event)``: the policy's probability of the
    step over the likeliest sibling's (``ENDS_READERS``, ``KEYS_READERS``). ``memo`` maps a parent (the
    text before the step) to the highest probability seen of its children, across
    calls for one query: siblings are scored together, and a step re-read later finds
    its siblings there. A step's probability is counted token by token
    (``Candidate.event_sibling_steps``): a token that straddles the boundary with
    the step before counts for this one, so a value closed in one chunk (``"MA"}},``
    then another call) and its sibling that chose another key (``"MA",``) are both
    read from the last token boundary before the parting, not the first over the
    whole chunk, value tokens included."""
    probs = {}
    for k, c in enumerate(candidates):
        steps = c.event_sibling_steps or c.event_steps
        for j, ev in enumerate(c.events):
            if j and reads(ev):
                lp, _ = steps[j] if j < len(steps) else (c.step_logprob, c.step_tokens)
                parent = c.text[:c.events[j - 1].offset]
                probs[k, j] = parent, math.exp(lp)
                memo[parent] = max(memo.get(parent, 0.0), math.exp(lp))
    return {kj: p / memo[parent] for kj, (parent, p) in probs.items()}


@lru_cache(maxsize=2)
def _end_reader(path: str) -> EndReader:
    return load_end_reader(path)


def _text_end_factors(candidates: Sequence[Any], head: list[list[float]], index: ToolIndex,
                      memo: dict) -> dict[tuple[int, int], float]:
    """Per (candidate, step) end decision, its factor under the text end reader
    (``ENDS_READERS``). ``memo`` keeps, per parent text, P(more) and the best head score
    of a sibling tool seen so far, across calls for one query."""
    reader = _end_reader(str(ENDS_SHIPPED))
    found = {}
    for k, c in enumerate(candidates):
        for j, ev in enumerate(c.events):
            if is_end_decision(ev):
                parent = c.text[:c.events[j - 1].offset]
                entry = memo.get(("text", parent))
                if entry is None:
                    entry = memo[("text", parent)] = [reader.p_more(index, calls_before(c.events, j)), 0.0]
                if ev.kind == "name":
                    entry[1] = max(entry[1], head[k][j])
                found[k, j] = ev.kind, parent
    out = {}
    for (k, j), (kind, parent) in found.items():
        p_more, best = memo[("text", parent)]
        out[k, j] = 1.0 - p_more if kind == "end" else p_more * (head[k][j] / best if best > 0 else 1.0)
    return out


def _prefix_scores(prm: "PRM", rows: list[list[list[float]]], candidates: Sequence[Any],
                   values: str = "head", ends: str = "head", end_memo: dict | None = None,
                   index: ToolIndex | None = None, keys: str = "head") -> list[float]:
    """P(every step of the prefix correct) per candidate: the product of the head's
    per-step scores (each is P(step correct | the steps before it are)); with
    ``values="policy"`` a value step's factor is the policy's confidence instead, with
    ``ends="policy"`` an end decision's and with ``keys="policy"`` a key step's the
    policy's odds of it (``_policy_odds``, over ``end_memo``), with ``ends="text"`` an
    end decision's the text end reader's (``_text_end_factors``, over ``index``, the
    query's ``ToolIndex``). The ``[]`` step's score is shifted by the checkpoint's
    calibration (``train.calibrate``)."""
    flat = [r for rs in rows for r in rs]
    p = prm.predict(np.array(flat, dtype=np.float32)) if flat else np.zeros(0)
    head, i = [], 0
    for rs in rows:
        head.append([float(x) for x in p[i:i + len(rs)]])
        i += len(rs)
    memo = {} if end_memo is None else end_memo
    odds = _text_end_factors(candidates, head, index, memo) if ends == "text" else {}
    if "policy" in (ends, keys):
        odds.update(_policy_odds(candidates, memo, lambda ev: (ends == "policy" and is_end_decision(ev))
                                 or (keys == "policy" and ev.kind == "key")))
    out = []
    for k, (hs, c) in enumerate(zip(head, candidates)):
        steps = [step_confidence(c, j) if values == "policy" and c.events[j].kind == "value"
                 else odds[k, j] if (k, j) in odds
                 else shifted(hs[j], prm.empty_log_odds) if is_empty_list(c.events[j])
                 else hs[j] for j in range(len(hs))]
        out.append(math.prod(steps))
    return out


def _check_values(values: str) -> str:
    if values not in VALUE_READERS:
        raise ToolprmError(f"values must be one of {VALUE_READERS}, got {values!r}")
    return values


def _check_ends(ends: str) -> str:
    if ends not in ENDS_READERS[:3]:
        raise ToolprmError(f"ends must be one of {ENDS_READERS}, got {ends!r}")
    return ends


def _check_keys(keys: str) -> str:
    if keys not in KEYS_READERS[:2]:
        raise ToolprmError(f"keys must be one of {KEYS_READERS}, got {keys!r}")
    return keys


def _resolved(choice: str, policy: Policy | None, reading: frozenset[str]) -> str:
    if choice == "auto":
        return "policy" if str(getattr(policy, "name", "")).lower() in reading else "head"
    return choice


def ends_reader(ends: str, policy: Policy | None) -> str:
    """``ends`` with "auto" resolved for ``policy`` (None: the default SmolLM2)."""
    return _check_ends(_resolved(ends, policy, POLICIES_READING_ENDS))


def keys_reader(keys: str, policy: Policy | None) -> str:
    """``keys`` with "auto" resolved for ``policy`` (None: the default SmolLM2)."""
    return _check_keys(_resolved(keys, policy, POLICIES_READING_KEYS))


class _IndexCache:
    """One ToolIndex and one memo of the policy's odds (``_policy_odds``) per query (the search
    scores many candidates of one context). The context itself is held, not its
    ``id``: a freed query's id can be reused by the next one, which would then read
    the old query's tools."""

    def __init__(self):
        self._context = None
        self._index = None
        self.end_memo: dict = {}

    def get(self, context) -> ToolIndex:
        if self._context is not context:
            self._context, self._index = context, ToolIndex(context.messages, context.tools)
            self.end_memo = {}
        return self._index


class PRMScorer:
    """A Scorer over the policy's own hidden states (``Candidate.hidden``).

    The checkpoint must have been trained on the same policy's hidden states
    (the manifest names it); the hidden size is checked on every call."""

    needs_hidden = True
    prefix_product = True  # a score can only fall as the output grows (engine.search.beam)

    def __init__(self, prm: PRM, values: str = "head", ends: str = "head", keys: str = "head"):
        self.prm = prm
        self.values = _check_values(values)
        self.ends = _check_ends(ends)
        self.keys = _check_keys(keys)
        self._index = _IndexCache()

    def score(self, context, candidates) -> list[float]:
        if not candidates:
            return []
        index = self._index.get(context)
        rows = []
        for c in candidates:
            if c.hidden is None and c.events:
                raise GenerationError("PRMScorer needs the policy's hidden states: run the decoder "
                                      "with want_hidden=True (generate() does so for a scorer "
                                      "with needs_hidden = True)")
            if c.events and c.hidden.shape[-1] != self.prm.hidden_size:
                raise GenerationError(
                    f"the PRM was trained on hidden states of size {self.prm.hidden_size} "
                    f"({self.prm.manifest.get('backbone', {}).get('name', '?')}), but the policy's "
                    f"are {c.hidden.shape[-1]}: use a PRM trained on this policy, or BackbonePRM")
            # The decoder keeps each step's hidden state (``event_hidden``); a step
            # without one (a hand-built candidate) reads the current state.
            hiddens = [c.event_hidden[j] if j < len(c.event_hidden) else c.hidden
                       for j in range(len(c.events))]
            rows.append(_step_rows(c, hiddens, index))
        return _prefix_scores(self.prm, rows, candidates, self.values, self.ends, self._index.end_memo, index,
                              self.keys)


class BackbonePRM:
    """A Scorer with its own backbone (any causal LM): it reads (query, tools,
    partial output) — the prompt in the backbone's own chat format followed by
    the partial output up to the step's end — and scores the hidden state there
    with the head.  The prompt's KV cache is computed once per query."""

    needs_hidden = False
    prefix_product = True

    def __init__(self, prm: PRM, model: Any, tokenizer: Any, values: str = "head", ends: str = "head",
                 keys: str = "head"):
        self.prm, self.model, self.tokenizer = prm, model, tokenizer
        self.values = _check_values(values)
        self.ends = _check_ends(ends)
        self.keys = _check_keys(keys)
        size = model.config.hidden_size
        if size != prm.hidden_size:
            raise ToolprmError(f"the PRM head expects hidden size {prm.hidden_size}, the backbone "
                               f"has {size}")
        self._index = _IndexCache()
        self._prompt_key: tuple | None = None
        self._prompt_cache = None
        self._prompt_len = 0
        self._memo_key: tuple | None = None
        self._memo: dict[str, np.ndarray] = {}

    def prompt_ids(self, messages: list[dict], tools: list[dict]) -> list[int]:
        return encode_prompt(self.tokenizer, messages, tools)

    @torch.inference_mode()
    def hidden_states(self, prompt_ids: list[int], partials: Sequence[str]) -> np.ndarray:
        """Last-layer hidden state at the last token of prompt + each partial output."""
        key = tuple(prompt_ids)
        if self._prompt_key != key:
            ids = torch.tensor([prompt_ids])
            out = self.model(input_ids=ids, use_cache=True, output_hidden_states=True)
            self._prompt_key, self._prompt_cache = key, cache_of(out)
            self._prompt_len = len(prompt_ids)
            self._prompt_last = out.hidden_states[-1][0, -1]
        toks = [self.tokenizer(p, add_special_tokens=False)["input_ids"] if p else [] for p in partials]
        res = np.zeros((len(partials), self.prm.hidden_size), dtype=np.float32)
        width = max((len(t) for t in toks), default=0)
        if width == 0:
            res[:] = self._prompt_last.float().numpy()
            return res
        pad = self.tokenizer.pad_token_id or 0
        n = len(toks)
        ids = torch.full((n, width), pad, dtype=torch.long)
        for i, t in enumerate(toks):
            ids[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        cache = copy.deepcopy(self._prompt_cache)
        cache.batch_repeat_interleave(n)
        attn = torch.ones(n, self._prompt_len + width, dtype=torch.long)
        pos = torch.arange(self._prompt_len, self._prompt_len + width)[None].expand(n, -1)
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                         output_hidden_states=True, **{cache_kwarg(self.model): cache})
        h = out.hidden_states[-1]
        for i, t in enumerate(toks):  # right padding: real tokens never see the pads
            res[i] = (h[i, len(t) - 1] if t else self._prompt_last).float().numpy()
        return res

    def score(self, context, candidates) -> list[float]:
        if not candidates:
            return []
        ids = self.prompt_ids(context.messages, context.tools)
        if self._memo_key != tuple(ids):  # hidden states by partial output, per prompt
            self._memo_key, self._memo = tuple(ids), {}
        partials = [[c.text[:ev.offset] for ev in c.events] for c in candidates]
        new = sorted({p for ps in partials for p in ps if p not in self._memo})
        for s in range(0, len(new), 32):
            for p, h in zip(new[s:s + 32], self.hidden_states(ids, new[s:s + 32])):
                self._memo[p] = h
        index = self._index.get(context)
        rows = [_step_rows(c, [self._memo[p] for p in ps], index) for c, ps in zip(candidates, partials)]
        return _prefix_scores(self.prm, rows, candidates, self.values, self.ends, self._index.end_memo, index,
                              self.keys)


def load_prm(path: str | os.PathLike | None = None, *, backbone: Any = None):
    """The shipped PRM (or the checkpoint at ``path``) as a Scorer.

    ``backbone=None``: a head over the policy's own hidden states (``PRMScorer``,
    ``needs_hidden = True``). ``backbone`` a model name/path or a (model,
    tokenizer) pair: a ``BackbonePRM`` over that separate causal LM (the
    checkpoint must have been trained on that backbone's hidden states)."""
    prm = load(path)
    trained_on = prm.manifest.get("backbone", {})
    if backbone is None:
        if trained_on.get("kind", "policy") != "policy":
            # A checkpoint trained on a separate backbone: load that one.
            backbone = trained_on.get("name")
        else:
            return PRMScorer(prm)
    if isinstance(backbone, tuple) and len(backbone) == 2:
        model, tok = backbone
    else:
        model, tok = load_model(backbone)
    return BackbonePRM(prm, model, tok)


@lru_cache(maxsize=4)
def _cached(path: str) -> PRM:
    return load(path)


def default_scorer(policy: Policy | None = None, values: str = "head", path: str | os.PathLike | None = None,
                   ends: str = "auto", keys: str = "auto"):
    """The scorer ``generate()`` uses by default for best_of_n, coarse_beam and fine_beam.

    The shipped head reads the policy's own hidden states, so for the policy it was
    trained on (the default SmolLM2) it is a ``PRMScorer`` (no extra forward pass).
    For any other policy it is a ``BackbonePRM`` with the shipped backbone: the PRM
    runs its own forward pass over (prompt, partial output).  ``policy``: an
    ``engine.models.Policy`` (or None for the default). ``values``: who reads a
    value step (``VALUE_READERS``: "policy" makes the hybrid scorer). ``ends``: who
    reads the end decision (``ENDS_READERS``), ``keys`` a key step (``KEYS_READERS``).
    ``path``: another head's checkpoint folder than the shipped one."""
    ends, keys = ends_reader(ends, policy), keys_reader(keys, policy)
    prm = _cached(str(Path(path) if path is not None else SHIPPED))
    trained_on = prm.manifest.get("backbone", {})
    name = trained_on.get("name", "smollm2")
    if trained_on.get("kind", "policy") == "policy":
        if policy is None or (getattr(policy, "name", None) == name
                              and policy.model.config.hidden_size == prm.hidden_size):
            return PRMScorer(prm, values, ends, keys)
    backbone = get_policy(None if name == "smollm2" else name)
    return BackbonePRM(prm, backbone.model, backbone.tokenizer, values, ends, keys)


__all__ = ["N_EXTRA", "PRM", "PRMHead", "PRMScorer", "BackbonePRM", "load_prm", "load",
           "save", "feature_matrix", "extra_features", "default_scorer", "step_confidence", "SHIPPED",
           "FEATURES", "VALUE_READERS", "ENDS_READERS", "ends_reader",
           "KEYS_READERS", "keys_reader", "CALIBRATION", "shifted", "is_empty_list", "weights_sha256"]
