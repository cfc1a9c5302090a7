"""OpenAI chat-completions requests and responses, as plain dicts, for ``toolprm serve``.

A validated request (``serve.ChatRequest`` dumped to a dict) becomes the
arguments of ``generate`` or ``chat`` (``plan``); a ``Result`` becomes a choice of
a ``chat.completion`` (``choice``), and settled steps become the tool-call deltas
of ``chat.completion.chunk`` events (``ArgumentStream``). A call's ``arguments``
string is ``json.dumps`` of its arguments both ways, so a streamed call reassembles
to exactly the string a plain response carries.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from toolprm.errors import ToolprmError


@dataclass
class Plan:
    """What one choice of a request runs: ``generate`` (``calls`` set) or a plain ``chat`` reply."""
    messages: list[dict]
    tools: list[dict]
    calls: str | None             # "any", "one", "one_or_more"; None: a plain-text reply
    tool: str | None = None       # a named tool_choice
    max_calls: int | None = None  # 1 when parallel_tool_calls is false
    options: dict = field(default_factory=dict)  # max_new_tokens, temperature, seed, strategy, ...


def plan(req: dict, defaults: dict) -> Plan:
    """The generation a request asks for. ``defaults``: the server's strategy, m, n
    and max_new_tokens. Raises ToolprmError naming the field where the request
    asks for something toolprm cannot do."""
    # "strict" asks for what the grammar always does; unset fields are left out
    tools = [{k: v for k, v in t["function"].items() if v is not None and k != "strict"}
             for t in req.get("tools") or []]
    choice = req.get("tool_choice")
    if choice is None:
        choice = "auto" if tools else "none"
    tool = None
    if isinstance(choice, dict):
        tool = choice["function"]["name"]
        if tool not in {t["name"] for t in tools}:
            raise ToolprmError(f"tool_choice names the function {tool!r}, which is not among the tools "
                               f"({', '.join(t['name'] for t in tools) or 'none given'})")
    elif choice != "none" and not tools:
        raise ToolprmError(f"tool_choice is {choice!r} but the request gives no tools")
    single = req.get("parallel_tool_calls") is False
    if choice == "none":
        calls = None
    elif choice == "auto":
        calls = "any"
    else:  # "required" or a named function
        calls = "one" if single else "one_or_more"
    max_new = req.get("max_completion_tokens") or req.get("max_tokens") or defaults["max_new_tokens"]
    options = {"max_new_tokens": max_new, "seed": req.get("seed") or 0}
    if req.get("temperature") is not None:
        options["temperature"] = req["temperature"]
    if req.get("top_p") is not None:
        options["top_p"] = req["top_p"]
    if calls is not None:
        options.update(strategy=req.get("strategy") or defaults["strategy"], m=req.get("m") or defaults["m"],
                       n=req.get("n_beams") or defaults["n"])
        if req.get("scorer"):
            options["scorer"] = req["scorer"]
    return Plan(messages(req["messages"]), tools, calls, tool, 1 if single else None, options)


def messages(msgs: list[dict]) -> list[dict]:
    """OpenAI messages as the ``{"role", "content"}`` chat the prompt is rendered
    from. An assistant's earlier tool calls are written as the call list the model
    answers with; a tool result is a ``tool`` message naming its call."""
    names = {}
    out = []
    for i, m in enumerate(msgs):
        role, content = m["role"], _text(m.get("content"))
        if role == "developer":
            role = "system"
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                names[c["id"]] = c["function"]["name"]
                try:
                    args = json.loads(c["function"]["arguments"] or "{}")
                except ValueError as e:
                    raise ToolprmError(f"messages[{i}].tool_calls: the arguments of call {c['id']!r} are "
                                       f"not JSON: {e}") from None
                calls.append({"name": c["function"]["name"], "arguments": args})
            content = (content + "\n" if content else "") + json.dumps(calls, ensure_ascii=False)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not call_id:
                raise ToolprmError(f"messages[{i}]: a tool message needs tool_call_id")
            if call_id not in names:
                raise ToolprmError(f"messages[{i}]: tool_call_id {call_id!r} answers no earlier assistant "
                                   f"tool call")
            content = json.dumps({"tool_call_id": call_id, "name": names[call_id], "content": content},
                                 ensure_ascii=False)
        out.append({"role": role, "content": content})
    if out[-1]["role"] == "assistant":
        raise ToolprmError("messages: the last message is the assistant's; there is nothing to answer")
    return out


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content)


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


def arguments_text(arguments: dict) -> str:
    return json.dumps(arguments, ensure_ascii=False)


def choice(index: int, result, max_new_tokens: int) -> dict:
    """One choice of a ``chat.completion`` from a ``generate`` or ``chat`` Result."""
    if result.calls:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id(), "type": "function",
             "function": {"name": c["name"], "arguments": arguments_text(c["arguments"])}}
            for c in result.calls]}
        reason = "tool_calls"
    else:
        message = {"role": "assistant", "content": result.text if result.calls is None else ""}
        reason = "length" if len(result.token_ids) >= max_new_tokens else "stop"
    return {"index": index, "message": message, "finish_reason": reason, "logprobs": None}


class ArgumentStream:
    """Turns settled steps (``generate``'s ``on_step``) into tool-call deltas: a
    call's id and name when its name is settled, then its arguments text, key by
    value, closed when the next call begins or the list ends."""

    def __init__(self):
        self.calls = 0          # calls begun
        self.open_keys = 0      # keys written in the current call's arguments

    def deltas(self, step: dict) -> list[dict]:
        kind = step["kind"]
        out = []
        if kind in ("name", "end") and self.calls:
            out.append(self._args("{}" if not self.open_keys else "}"))
        if kind == "name":
            self.calls += 1
            self.open_keys = 0
            out.append({"index": self.calls - 1, "id": call_id(), "type": "function",
                        "function": {"name": json.loads(step["text"]), "arguments": ""}})
        elif kind == "key":
            out.append(self._args(("{" if not self.open_keys else ", ") + json.dumps(step["key"], ensure_ascii=False)
                                  + ": "))
            self.open_keys += 1
        elif kind == "value":
            out.append(self._args(json.dumps(json.loads(step["text"]), ensure_ascii=False)))
        return out

    def _args(self, text: str) -> dict:
        return {"index": self.calls - 1, "function": {"arguments": text}}
