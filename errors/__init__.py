"""toolprm.errors: one exception hierarchy shared by every layer; messages say what is
wrong and where."""


class ToolprmError(Exception):
    """Base class of every error toolprm raises on purpose."""


class ToolSchemaError(ToolprmError, ValueError):
    """A tool spec is malformed or uses JSON Schema the grammar cannot express.

    The message names the tool and the JSON path of the offending part.
    """

    def __init__(self, message: str, tool: str | None = None, path: str = "$"):
        self.tool = tool
        self.path = path
        where = f"tool {tool!r} at {path}" if tool is not None else f"at {path}"
        super().__init__(f"{where}: {message}")


class InvalidTokenError(ToolprmError, ValueError):
    """A token was fed to a grammar state that forbids it."""


class GenerationError(ToolprmError, RuntimeError):
    """Decoding could not produce a valid output (e.g. the token budget is too small)."""


class GenerationCancelled(GenerationError):
    """Generation was stopped from outside (``cancel`` was set): a time limit, or a
    client that went away."""


class ModelNotFoundError(ToolprmError, FileNotFoundError):
    """A model could not be found; the message says how to install it."""


__all__ = ["ToolprmError", "ToolSchemaError", "InvalidTokenError", "GenerationError",
           "GenerationCancelled", "ModelNotFoundError"]
