"""toolprm.grammar: tool signatures -> token-level automaton with step boundaries."""
from toolprm.errors import InvalidTokenError, ToolSchemaError

from .compiled import DEFAULT_MAX_CALLS, STEP_KINDS, Grammar, State, StepEvent, compile
from .languages import LANGUAGES
from .normalize import CALL_MODES, Tool, call_list_schema, normalize_tools
from .vocab import Vocabulary

__all__ = ["compile", "Grammar", "State", "StepEvent", "STEP_KINDS", "CALL_MODES", "Tool", "Vocabulary",
           "normalize_tools", "call_list_schema", "LANGUAGES", "DEFAULT_MAX_CALLS", "ToolSchemaError",
           "InvalidTokenError"]
