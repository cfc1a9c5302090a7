"""The one place that knows how this transformers version passes a KV cache.

transformers renamed the forward argument ``past_key_values`` to ``cache`` (and
the output attribute with it); reading the old name where the new one exists
warns. Every caller that runs a model with a cache goes through these two."""
from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def _kwarg_of(forward_type: type) -> str:
    params = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(model: Any) -> str:
    """The keyword ``model.forward`` takes its KV cache by."""
    return _kwarg_of(type(model))


def cache_of(out: Any) -> Any:
    """The KV cache of a model output, whichever name this version gives it."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
