"""Prompts asking a model for a JSON list of tool calls.

The model must answer with ``[{"name": "<tool>", "arguments": {...}}, ...]``, or
``[]`` when no tool fits. Where the model's chat template renders tools itself
(Qwen2.5, Llama 3.1, ...), it gets them through ``tools=`` plus a system
instruction stating that format; otherwise (SmolLM2's template ignores tools)
a built-in system prompt in Hammer's layout carries the task, the tools as a
JSON list and the format. A tokenizer without a chat template gets plain text.
"""

from __future__ import annotations

import json

TASK_INSTRUCTION = (
    "You are an assistant that calls tools. To answer the user's request, choose the "
    "appropriate tools from the list below and fill in correct values for their parameters.\n"
    "1. Make one or more tool calls that fulfil the request.\n"
    "2. If no tool can fulfil the request, make no call.\n"
    "3. Use only the tools and parameters listed; give every required parameter."
)

FORMAT_INSTRUCTION = (
    "Answer with a JSON list of tool calls and nothing else, in exactly this format:\n"
    '[{"name": "tool_name", "arguments": {"parameter": "value"}}, ...]\n'
    "Each call gives the tool's name and an object of its arguments with values of the right types. "
    "If no tool fits the request, answer with an empty list: []"
)


def build_prompt(tokenizer, query: str | list[dict], tools: list[dict]) -> str:
    """The prompt text, ending where the model's answer (the JSON call list) begins.

    `query`: the user's request, or a chat as a list of ``{"role", "content"}`` messages.
    `tools`: normalized bare specs ``{"name", "description", "parameters"}``.
    """
    messages = [{"role": "user", "content": query}] if isinstance(query, str) else [dict(m) for m in query]
    if not getattr(tokenizer, "chat_template", None):
        return _plain_text(messages, tools)

    wrapped = [{"type": "function", "function": tool} for tool in tools]
    if tools and _template_renders_tools(tokenizer, messages, wrapped, [t["name"] for t in tools]):
        chat = _with_system(messages, FORMAT_INSTRUCTION)
        return _render(tokenizer, chat, tools=wrapped)
    return _render(tokenizer, _with_system(messages, _system_prompt(tools)))


def chat_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt for a plain-text reply to ``messages``: no tools, no call format."""
    messages = [dict(m) for m in messages]
    if not getattr(tokenizer, "chat_template", None):
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join([*lines, "Assistant:"]) + " "
    return _render(tokenizer, messages)


def _system_prompt(tools: list[dict]) -> str:
    return (
        f"{TASK_INSTRUCTION}\n\n"
        f"Available tools:\n{json.dumps(tools, ensure_ascii=False)}\n\n"
        f"{FORMAT_INSTRUCTION}"
    )


def _with_system(messages: list[dict], text: str) -> list[dict]:
    """Put `text` in the system message, ahead of any system message the caller gave."""
    if messages and messages[0].get("role") == "system":
        return [{"role": "system", "content": f"{text}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _render(tokenizer, messages: list[dict], **kw) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)


def _template_renders_tools(tokenizer, messages, wrapped, names) -> bool:
    """Whether the chat template shows the tools: every name appears more often with tools= than without."""
    try:
        with_tools = _render(tokenizer, messages, tools=wrapped)
        without = _render(tokenizer, messages)
    except Exception:  # a template that chokes on tools= does not support them
        return False
    return all(with_tools.count(name) > without.count(name) for name in names)


def _plain_text(messages: list[dict], tools: list[dict]) -> str:
    lines = [_system_prompt(tools), ""]
    for m in messages:
        lines.append(f"{m['role'].capitalize()}: {m['content']}")
    lines.append("Assistant:\n")
    return "\n".join(lines)
