"""The ``outlines`` peer: the outlines library's own transformers integration,
constrained to the JSON Schema of the call list, greedy.

It is a reference the project must beat, so it runs exactly what an outlines
user would run: ``outlines.from_transformers(model, tokenizer)``, then
``outlines.Generator(model, outlines.json_schema(schema))`` (outlines' default
JSON backend, outlines_core) and one call of that generator with
``do_sample=False``. Only three things are arranged around it so that the
comparison with the engine's strategies is like for like:

* the same model object and tokenizer (a :class:`toolprm.engine.Policy`);
* the same prompt text (:func:`toolprm.engine.prompts.build_prompt`). outlines
  would wrap a plain string in the chat template again, so the wrapper's
  ``type_adapter.has_chat_template`` is switched off: the string we pass is
  already the templated prompt;
* the same JSON Schema the engine's grammar is compiled from
  (:func:`toolprm.grammar.call_list_schema` with the grammar's default
  ``max_calls``, i.e. ``compile(tools, tokenizer, calls).schema``), computed
  without building the engine's token index.

Tokens are counted exactly with a ``streamer`` passed through to transformers'
``generate`` (outlines forwards inference keyword arguments); one forward pass
per generated token (the first one also reads the prompt). ``compile_seconds`` is
the time outlines takes to build its logits processor for the schema (it
builds its vocabulary and regex index anew for every generator), ``seconds``
the whole call including it — as the engine's ``seconds`` includes compiling
its grammar.
"""
from __future__ import annotations

import json
import time
from typing import Any

from toolprm.engine.api import Result
from toolprm.engine.models import Policy, get_policy
from toolprm.engine.parse import strict_calls
from toolprm.engine.prompts import build_prompt
from toolprm.engine.query import prepare
from toolprm.errors import ToolprmError
from toolprm.grammar import DEFAULT_MAX_CALLS, call_list_schema

__all__ = ["OutlinesPeer"]

STRATEGY = "outlines"


class _TokenRecorder:
    """A transformers streamer that keeps the generated token ids.

    ``generate`` first hands it the prompt, then each new token."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class OutlinesPeer:
    """Greedy JSON-Schema-constrained generation with outlines on a toolprm policy."""

    def __init__(self, model: Any = None) -> None:
        try:
            import outlines
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ToolprmError("the outlines peer needs the `outlines` package: "
                               "pip install -e '.[bench]' (outlines>=1.3)") from exc
        self._outlines = outlines
        self.policy: Policy = get_policy(model)
        tok = self.policy.tokenizer
        # from_transformers sets padding_side="left" on the shared tokenizer; one
        # prompt at a time needs no padding, so leave the tokenizer as the engine had it.
        side = tok.padding_side
        self.model = outlines.from_transformers(self.policy.model, tok)
        tok.padding_side = side
        self.model.type_adapter.has_chat_template = False  # our prompt is already templated

    def generate(self, query, tools, *, calls: str = "any", max_new_tokens: int = 256) -> Result:
        """One greedy constrained generation; a :class:`Result` like the engine's
        (``calls`` None when the text is not a complete call list)."""
        outlines = self._outlines
        tok = self.policy.tokenizer
        q = prepare(tok, query, tools)
        prompt = build_prompt(tok, q.messages, q.tools)  # the text of q.prompt_ids: outlines tokenizes it
        schema = call_list_schema(list(q.normalized), calls, DEFAULT_MAX_CALLS)

        t0 = time.perf_counter()
        generator = outlines.Generator(self.model, outlines.json_schema(json.dumps(schema)))
        t1 = time.perf_counter()
        recorder = _TokenRecorder()
        text = generator(prompt, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                         else tok.eos_token_id, streamer=recorder)
        t2 = time.perf_counter()

        ids = recorder.ids
        steps = len(ids)
        eos = tok.eos_token_id
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        stats = {"generated_tokens": len(ids), "forced_tokens": 0, "forward_passes": steps,
                 "scorer_calls": 0, "compile_seconds": round(t1 - t0, 4),
                 "generate_seconds": round(t2 - t1, 4), "seconds": round(t2 - t0, 4)}
        return Result(strict_calls(text), text, [], stats, STRATEGY)
