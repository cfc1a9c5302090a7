"""One query made ready to decode: the seam every driver of the decoder goes through.

``prepare`` normalizes the tools, renders the prompt in the policy's chat format and
tokenizes it; ``Query.decoder`` compiles the grammar for a call-count mode and
prefills the prompt. ``generate``, the PRM's rollouts, the PRM's own backbone and
the benchmarks all build their prompts and decoders here, so a rollout sees
exactly the prompt and the forks the search sees. The search's scorers receive
the ``Query`` as their context.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from toolprm.errors import ToolprmError
from toolprm.grammar import DEFAULT_MAX_CALLS, Tool, compile, normalize_tools

from .decode import Decoder, Stats
from .prompts import build_prompt


@dataclass
class Query:
    """What every candidate of one query shares."""
    messages: list[dict]
    tools: list[dict]          # normalized bare specs {"name", "description", "parameters"}
    prompt_ids: list[int]
    normalized: tuple[Tool, ...] = ()

    def decoder(self, policy: Any, calls: str = "any", max_calls: int = DEFAULT_MAX_CALLS,
                **options) -> Decoder:
        """A decoder for this query on ``policy`` (an ``engine.models.Policy``), the
        prompt prefilled; ``options`` go to ``Decoder``."""
        grammar = compile(list(self.normalized) or self.tools, policy.tokenizer, calls=calls,
                          max_calls=max_calls)
        options.setdefault("pad_token_id", policy.tokenizer.pad_token_id or 0)
        options.setdefault("stats", Stats())
        return Decoder(policy.runtime, grammar, self.prompt_ids, **options)

    def only(self, name: str) -> "Query":
        """This query with its calls restricted to the tool ``name`` (the prompt still
        lists every tool, as OpenAI's named ``tool_choice`` does)."""
        kept = tuple(t for t in self.normalized if t.name == name)
        if not kept:
            raise ToolprmError(f"no tool named {name!r}; the tools are: "
                               f"{', '.join(t.name for t in self.normalized)}")
        return replace(self, normalized=kept)


def as_messages(query: str | list[dict]) -> list[dict]:
    """A user request as chat messages: a string, or a list of {'role', 'content'} dicts."""
    if isinstance(query, str):
        return [{"role": "user", "content": query}]
    if isinstance(query, list) and all(isinstance(m, dict) and "role" in m and "content" in m
                                       for m in query):
        return query
    raise ToolprmError("query must be a string or a list of {'role', 'content'} chat messages")


def prompt_ids(tokenizer: Any, messages: list[dict], specs: list[dict]) -> list[int]:
    """Token ids of the prompt for ``messages`` and normalized ``specs`` in the
    tokenizer's own chat format."""
    return tokenizer(build_prompt(tokenizer, messages, specs), add_special_tokens=False)["input_ids"]


def prepare(tokenizer: Any, query: str | list[dict], tools: list[dict]) -> Query:
    """Normalize ``tools`` (OpenAI, bare or BFCL-style; ``ToolSchemaError`` names what
    is wrong), render and tokenize the prompt."""
    norm = normalize_tools(tools)
    specs = [t.spec() for t in norm]
    messages = as_messages(query)
    return Query(messages, specs, prompt_ids(tokenizer, messages, specs), tuple(norm))
