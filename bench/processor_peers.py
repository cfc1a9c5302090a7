"""The ``xgrammar`` and ``llguidance`` peers: greedy decoding under their JSON-Schema
constraint through transformers' ``generate`` with a logits processor.

Like the ``outlines`` peer (:mod:`toolprm.bench.outlines_peer`) they run what a user of
each library would run, on what the engine's strategies get:

* the same model object and tokenizer (a :class:`toolprm.engine.Policy`; its
  transformers model, fp32, as the outlines peer);
* the same prompt: the engine's own token ids (:func:`toolprm.engine.query.prepare`);
* the same JSON Schema the engine's grammar is compiled from
  (:func:`toolprm.grammar.call_list_schema` with the grammar's default ``max_calls``).

XGrammar: ``xgrammar.contrib.hf.LogitsProcessor`` (shipped with xgrammar) over
``GrammarCompiler.compile_json_schema``; one ``TokenizerInfo`` and one compiler (with
its cache) per peer, as a server would keep them. llguidance ships no transformers
processor; :class:`LLGuidanceProcessor` is the few lines its documentation's pattern
asks for (an ``LLMatcher`` per sequence: consume the last token, fill the bitmask,
mask the logits). Both without free whitespace: the separators ``", "`` and ``": "``
(json.dumps'), so that a small model cannot spend its tokens on spaces (the engine's
grammar allows at most one space after ``,`` and ``:``).

``compile_seconds`` is the schema's compile (the grammar, the processor),
``seconds`` the whole call including it — as the engine's ``seconds`` includes
compiling its grammar.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from toolprm.engine.api import Result
from toolprm.engine.models import Policy, get_policy
from toolprm.engine.parse import strict_calls
from toolprm.engine.query import prepare
from toolprm.errors import ToolprmError
from toolprm.grammar import DEFAULT_MAX_CALLS, call_list_schema

__all__ = ["XGrammarPeer", "LLGuidancePeer", "LLGuidanceProcessor", "PROCESSOR_PEERS"]

SEPARATORS = (", ", ": ")


class LLGuidanceProcessor:
    """A transformers logits processor over llguidance's ``LLMatcher`` (one per row).

    Use one per ``generate`` call: the first call sees the prompt, each later one
    the token chosen last."""

    def __init__(self, tokenizer, grammar: str, vocab_size: int) -> None:
        import llguidance

        self.llg = llguidance
        self.tokenizer, self.grammar, self.vocab_size = tokenizer, grammar, vocab_size
        self.matchers: list = []
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.matchers:
            self.matchers = [self.llg.LLMatcher(self.tokenizer, self.grammar, log_level=0)
                             for _ in range(input_ids.shape[0])]
            for m in self.matchers:
                if m.is_error():
                    raise ToolprmError(f"llguidance refused the schema: {m.get_error()[:300]}")
            self.mask = np.full((input_ids.shape[0], (self.vocab_size + 31) // 32), -1, dtype=np.int32)
        elif self.started:
            for i, m in enumerate(self.matchers):
                if not m.is_stopped() and not m.consume_token(int(input_ids[i, -1])):
                    raise ToolprmError(f"llguidance rejected the token it allowed: {m.get_error()[:300]}")
        self.started = True
        for i, m in enumerate(self.matchers):
            row = self.mask[i]
            m.unsafe_compute_mask_ptr(row.ctypes.data, row.nbytes)
        bits = np.unpackbits(self.mask.view(np.uint8), axis=1, bitorder="little")[:, :scores.shape[1]]
        allowed = torch.from_numpy(bits.astype(bool))
        if allowed.shape[1] < scores.shape[1]:
            allowed = torch.nn.functional.pad(allowed, (0, scores.shape[1] - allowed.shape[1]))
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))


class _ProcessorPeer:
    """Greedy constrained generation with a logits processor on a toolprm policy."""

    strategy = ""
    package = ""

    def __init__(self, model: Any = None) -> None:
        self.policy: Policy = get_policy(model)
        self.vocab_size = int(self.policy.model.config.vocab_size)
        try:
            self._setup()
        except ImportError as exc:
            raise ToolprmError(f"the {self.strategy} peer needs the `{self.package.split('=')[0]}` package: "
                               f"pip install {self.package} (or pip install -e '.[bench]')") from exc

    def _setup(self) -> None:
        raise NotImplementedError

    def _processor(self, schema: dict):
        raise NotImplementedError

    def generate(self, query, tools, *, calls: str = "any", max_new_tokens: int = 256) -> Result:
        """One greedy constrained generation; a :class:`Result` like the engine's
        (``calls`` None when the text is not a complete call list)."""
        tok = self.policy.tokenizer
        q = prepare(tok, query, tools)
        schema = call_list_schema(list(q.normalized), calls, DEFAULT_MAX_CALLS)
        t0 = time.perf_counter()
        processor = self._processor(schema)
        t1 = time.perf_counter()
        ids = torch.tensor([q.prompt_ids])
        eos = tok.eos_token_id
        with torch.inference_mode():
            out = self.policy.model.generate(
                ids, attention_mask=torch.ones_like(ids), logits_processor=[processor], do_sample=False,
                max_new_tokens=max_new_tokens, eos_token_id=eos,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos)
        t2 = time.perf_counter()
        new = [int(t) for t in out[0, ids.shape[1]:]]
        steps = len(new)
        if new and new[-1] == eos:
            new = new[:-1]
        text = tok.decode(new, skip_special_tokens=True)
        stats = {"generated_tokens": len(new), "forced_tokens": 0, "forward_passes": steps,
                 "scorer_calls": 0, "compile_seconds": round(t1 - t0, 4),
                 "generate_seconds": round(t2 - t1, 4), "seconds": round(t2 - t0, 4)}
        return Result(strict_calls(text), text, [], stats, self.strategy)


class XGrammarPeer(_ProcessorPeer):
    strategy = "xgrammar"
    package = "xgrammar==0.2.8"

    def _setup(self) -> None:
        import xgrammar as xgr
        import xgrammar.contrib.hf

        self.xgr = xgr
        tok = self.policy.tokenizer
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=self.vocab_size,
                                                  stop_token_ids=[tok.eos_token_id])
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)

    def _processor(self, schema: dict):
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                     separators=SEPARATORS)
        return self.xgr.contrib.hf.LogitsProcessor(compiled)


class LLGuidancePeer(_ProcessorPeer):
    strategy = "llguidance"
    package = "llguidance==1.9.1"

    def _setup(self) -> None:
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        tok = self.policy.tokenizer
        self.lltok = llguidance.hf.from_tokenizer(tok, n_vocab=self.vocab_size, eos_token=tok.eos_token_id)

    def _processor(self, schema: dict):
        grammar = self.llg.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False, "item_separator": SEPARATORS[0],
                                          "key_separator": SEPARATORS[1]})
        return LLGuidanceProcessor(self.lltok, grammar, self.vocab_size)


PROCESSOR_PEERS = {"xgrammar": XGrammarPeer, "llguidance": LLGuidancePeer}
