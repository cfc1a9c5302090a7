"""The text end reader: after a call, does the call list go on or close?

The head reads this decision badly (balanced accuracy near chance on end steps) and
SmolLM2's own odds read it worse, because nearly every live query it was trained on
wants one call. This reader needs no model: a logistic regression over what the
calls so far leave unsaid in the query (``END_FEATURES``), trained by ``toolprm
train ends`` on gold call lists of live queries and of synthetic multi-call queries
made by joining live ones (``train.ends``). ``p_more`` is its probability that
another call follows.

Its weights are one small JSON file (``ENDS_SHIPPED``) holding the feature names
it was trained on; loading refuses a file whose names differ.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from toolprm.errors import ToolprmError

from .features import ToolIndex, _WORD, _words, leaves

ENDS_SHIPPED = Path(__file__).resolve().parent / "ends_checkpoint.json"

_AFTER = re.compile(r"\s*(?:,|and\b|or\b|&|vs\b\.?|versus\b|as well as\b|also\b|then\b|;)\s*", re.I)
_BEFORE = re.compile(r"(?:,|\band|\bor|&|\bvs\.?|\bversus|\bas well as|\balso|\bthen|;)\s*$", re.I)
_COORDINATION = re.compile(r",|;|&|\b(?:and|or|also|then|vs|versus|both|each|respectively|as well as)\b", re.I)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def coordination_cue(query: str, calls: Sequence[dict]) -> int:
    """How many of the values ``calls`` took from ``query`` stand next to a
    coordination (``and``, ``or``, a comma, ``&``, ``vs``, ``as well as``, ``also``,
    ``then``, ``;``) whose other side (the next word after it, or the last before it)
    lies outside every used value: "weather in Paris and Tokyo", after Paris."""
    text = query.lower()
    used = []
    for c in calls:
        for s in (str(x) for x in leaves(c.get("arguments") or {}) if not isinstance(x, bool) and x is not None):
            s = s.lower().strip()
            at = text.find(s) if len(s) >= 2 else -1
            if at >= 0:
                used.append((at, at + len(s)))

    def free(i: int) -> bool:
        return 0 <= i < len(text) and text[i].isalnum() and not any(a <= i < b for a, b in used)

    n = 0
    for a, b in used:
        after = _AFTER.match(text, b)
        if after and after.end() > b and free(after.end()):
            n += 1
        before = _BEFORE.search(text[:a])
        if before and free(len(text[:before.start()].rstrip()) - 1):
            n += 1
    return n


#: What the reader sees, in order: how much of the query the calls so far leave
#: unused (numbers, content words), coordination around what they used, how well the
#: tools not yet called match the query against those called, and the query's shape.
END_FEATURES = (
    "calls_so_far", "coordination_cue", "unused_numbers", "unused_numbers_share", "unused_words",
    "unused_words_share", "coordinations", "questions", "query_words", "uncalled_tool_similarity",
    "called_tool_similarity", "uncalled_margin", "one_over_tools", "non_latin",
)


def _tool_words(index: ToolIndex, name: str) -> set[str]:
    t = index.tools.get(name) or {}
    props = (t.get("parameters", {}) or {}).get("properties", {}) or {}
    text = [name.replace("_", " ").replace(".", " "), str(t.get("description", ""))]
    text += [k.replace("_", " ") + " " + str((p or {}).get("description", "")) for k, p in props.items()]
    return _words(" ".join(text))


def end_features(index: ToolIndex, calls: Sequence[dict]) -> list[float]:
    """``END_FEATURES`` of the decision after ``calls`` (``{"name", "arguments"}``,
    at least one) against the query and tools of ``index``."""
    used = [x for c in calls for x in leaves(c.get("arguments") or {}) if x is not None and not isinstance(x, bool)]
    used_text = " ".join(str(x) for x in used).lower()
    numbers = index.numbers
    unused_numbers = sum(1 for n in numbers if not re.search(r"(?<![\d.])" + re.escape(n) + r"(?![\d])", used_text))
    called = {c.get("name") for c in calls}
    explained = _words(used_text)
    for name in called:
        explained |= _tool_words(index, name)
    unused_words = len(index.qwords - explained)
    uncalled = [s for n, s in index.sim.items() if n not in called]
    called_sim = max((index.sim.get(n, 0.0) for n in called), default=0.0)
    uncalled_sim = max(uncalled, default=0.0)
    named = {
        "calls_so_far": min(len(calls), 4) / 4,
        "coordination_cue": min(coordination_cue(index.query, calls), 3) / 3,
        "unused_numbers": min(unused_numbers, 4) / 4,
        "unused_numbers_share": unused_numbers / len(numbers) if numbers else 0.0,
        "unused_words": min(unused_words, 12) / 12,
        "unused_words_share": unused_words / len(index.qwords) if index.qwords else 0.0,
        "coordinations": min(len(_COORDINATION.findall(index.query)), 6) / 6,
        "questions": min(index.query.count("?"), 3) / 3,
        "query_words": min(len(_WORD.findall(index.query.lower())), 60) / 60,
        "uncalled_tool_similarity": uncalled_sim,
        "called_tool_similarity": called_sim,
        "uncalled_margin": uncalled_sim - called_sim,
        "one_over_tools": 1.0 / max(1, len(index.tools)),
        "non_latin": 1.0 if _CJK.search(index.query) else 0.0,
    }
    return [named[k] for k in END_FEATURES]


class EndReader:
    """A logistic regression over standardized ``END_FEATURES``: P(another call follows)."""

    def __init__(self, weights: Sequence[float], bias: float, mean: Sequence[float], scale: Sequence[float],
                 meta: dict | None = None):
        if not len(weights) == len(mean) == len(scale) == len(END_FEATURES):
            raise ToolprmError(f"an end reader needs {len(END_FEATURES)} weights, means and scales")
        self.weights, self.bias = [float(w) for w in weights], float(bias)
        self.mean, self.scale = [float(m) for m in mean], [float(s) or 1.0 for s in scale]
        self.meta = meta or {}

    def p_more_features(self, x: Sequence[float]) -> float:
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.scale))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def p_more(self, index: ToolIndex, calls: Sequence[dict]) -> float:
        return self.p_more_features(end_features(index, calls))

    def to_json(self) -> dict:
        return {"features": list(END_FEATURES), "weights": self.weights, "bias": self.bias,
                "mean": self.mean, "scale": self.scale, **self.meta}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")


def load_end_reader(path: str | Path = ENDS_SHIPPED) -> EndReader:
    """The end reader at ``path``; refuses one trained on other features."""
    p = Path(path)
    if not p.is_file():
        raise ToolprmError(f"no end reader at {p}; train one with `toolprm train ends --out {p}`")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ToolprmError(f"{p}: not an end reader ({e})") from None
    if not isinstance(d, dict) or d.get("features") != list(END_FEATURES):
        raise ToolprmError(f"{p}: its features {d.get('features') if isinstance(d, dict) else None} are not "
                           f"this version's {list(END_FEATURES)}; retrain it with `toolprm train ends`")
    try:
        return EndReader(d["weights"], d["bias"], d["mean"], d["scale"],
                         {k: v for k, v in d.items() if k not in ("features", "weights", "bias", "mean", "scale")})
    except (KeyError, TypeError, ValueError) as e:
        raise ToolprmError(f"{p}: a malformed end reader ({e})") from None


def calls_before(events: Sequence[Any], j: int) -> list[dict]:
    """The calls written by ``events[:j]`` (name and value events)."""
    calls: list[dict] = []
    for ev in events[:j]:
        if ev.kind == "name":
            calls.append({"name": ev.value, "arguments": {}})
        elif ev.kind == "value" and calls:
            calls[-1]["arguments"][ev.key] = ev.value
    return calls


__all__ = ["END_FEATURES", "ENDS_SHIPPED", "EndReader", "calls_before", "coordination_cue", "end_features",
           "load_end_reader"]
