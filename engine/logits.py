"""The grammar as a transformers LogitsProcessor, for users who keep their own loop:

    proc = GrammarLogitsProcessor(grammar)
    model.generate(ids, logits_processor=[proc], ...)

It masks every token the grammar forbids; after the call list is complete only EOS
is allowed, so generation stops there. Works with batches and beam search (states
are looked up by each row's generated tokens, so reordered beams are fine)."""
from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor

from toolprm.grammar import Grammar, State

from .decode import canonical_logits


class GrammarLogitsProcessor(LogitsProcessor):
    def __init__(self, grammar: Grammar):
        self.grammar = grammar
        self.prompt_len: int | None = None
        self._states: dict[tuple[int, ...], State] = {(): grammar.start()}

    def state_of(self, generated: tuple[int, ...]) -> State:
        st = self._states.get(generated)
        if st is None:
            st = self.state_of(generated[:-1]).advance(generated[-1])
            self._states[generated] = st
        return st

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        masks = np.zeros(scores.shape, dtype=bool)
        states = [self.state_of(tuple(input_ids[row, self.prompt_len:].tolist()))
                  for row in range(input_ids.shape[0])]
        for row, state in enumerate(states):
            m = state.allowed_mask()
            masks[row, :len(m)] = m
        scores = canonical_logits(scores, states)
        return scores.masked_fill(~torch.from_numpy(masks).to(scores.device), float("-inf"))
