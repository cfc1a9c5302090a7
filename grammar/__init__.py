"""toolprm.grammar: tool signatures -> token-level automaton with step boundaries."""
from .compiled import DEFAULT_MAX_CALLS, Grammar, State, StepEvent, compile
from .errors import GenerationError, InvalidTokenError, ToolprmError, ToolSchemaError
from .normalize import Tool, call_list_schema, normalize_tools
from .vocab import Vocabulary

__all__ = ["compile", "Grammar", "State", "StepEvent", "Tool", "Vocabulary", "normalize_tools",
           "call_list_schema", "DEFAULT_MAX_CALLS", "ToolprmError", "ToolSchemaError",
           "GenerationError", "InvalidTokenError"]
