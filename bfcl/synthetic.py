"""Multi-call queries built from single-call live ones.

Live BFCL has few queries that want more than one call (40 of 1,351 with an answer
key). Two builders make more from single-call live queries:

* ``coordinate`` joins a value the query writes out with the same parameter's values
  from other queries on the same tool ("weather in Paris" → "weather in Paris and
  Tokyo"); the answer repeats the call with each value, as BFCL's parallel
  category asks;
* ``join_cases`` joins whole requests ("<first request> Also, <second request>")
  and takes their answers together.

``synthetic_multi`` draws from both (``train.ends`` trains the text end reader on
them). ``coordinated_cases`` is the ``coordinated`` category: the coordinated
queries built from the held-out live queries only (``data.held_out``), which no
reader trains on, so a choice about multi-call answers can be tested on more than
live BFCL's 40. Nothing here reads a test category.
"""
from __future__ import annotations

import dataclasses
import functools
import random
import re

from toolprm.errors import ToolprmError

from .data import KNOWN_UNSATISFIABLE, Case, assert_not_test, bfcl_cases, ground_truth_calls, held_out

#: Where single-call sources come from.
SOURCE_CATEGORIES = ("live_simple", "live_multiple")
JOINERS = (" Also, ", " And ", "\n", " ", " Then, ", " In addition, ")
CONJUNCTIONS = (" and ", ", ", " & ", " as well as ", " or ")
#: The ``coordinated`` category: this many queries, drawn with this seed (the held-out
#: synthetic queries ``train.ends`` measures its reader on).
COORDINATED_SIZE, COORDINATED_SEED = 150, 1


def single_call(case: Case) -> bool:
    return (len(case.ground_truth) == 1 and sum(m.get("role") == "user" for m in case.messages) == 1
            and case.id not in KNOWN_UNSATISFIABLE)


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:1].isupper() and not s[1:2].isupper() else s


def join_cases(parts: list[Case], joiner: str) -> Case | None:
    """One multi-call case from single-call ``parts``: their user turns joined, their
    tools together, their answers in order. None where two tools share a name but
    not a spec."""
    tools: dict[str, dict] = {}
    for c in parts:
        for t in c.tools:
            if t["name"] in tools and tools[t["name"]] != t:
                return None
            tools[t["name"]] = t
    texts = [next(m["content"] for m in c.messages if m.get("role") == "user").strip() for c in parts]
    text = texts[0]
    for t in texts[1:]:
        text += joiner + (_lower_first(t) if joiner.strip().endswith(",") else t)
    system = [m for m in parts[0].messages if m.get("role") != "user"]
    names = {next(iter(a)) for c in parts for a in c.ground_truth}
    category = "live_parallel" if len(tools) == 1 and len(names) == 1 else "live_parallel_multiple"
    return Case(id="synthetic_" + "+".join(c.id for c in parts), category=category,
                messages=system + [{"role": "user", "content": text}], tools=list(tools.values()),
                ground_truth=[a for c in parts for a in c.ground_truth])


def _written(value, text: str) -> int:
    """Where ``value`` (a string or a number) stands in ``text`` as a whole word, or -1."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        return -1
    m = re.search(r"(?<!\w)" + re.escape(str(value)) + r"(?!\w)", text)
    return m.start() if m else -1


def coordinate(base: Case, others: list[Case], conjunction: str) -> Case | None:
    """One multi-call case from single-call cases on one tool: a value of ``base``'s
    call that its query writes out is joined there with the same parameter's values
    from ``others`` ("weather in Paris" → "weather in Paris and Tokyo"), and the
    answer repeats ``base``'s call with each. None where no parameter allows it."""
    (name, gt), = base.ground_truth[0].items()
    text = next(m["content"] for m in base.messages if m.get("role") == "user")
    first = ground_truth_calls(base)[0]["arguments"]
    for key in sorted(first):
        at = _written(first[key], text)
        if at < 0:
            continue
        alts = []
        for o in others:
            (o_name, o_gt), = o.ground_truth[0].items()
            v = ground_truth_calls(o)[0]["arguments"].get(key) if o_name == name else None
            if v is None or type(v) is not type(first[key]) or v == first[key] or str(v) in text \
                    or any(str(v) == str(x) for x in alts) or key not in o_gt:
                break
            alts.append(v)
        else:
            if not alts:
                continue
            words = [str(first[key])] + [str(v) for v in alts]
            joined = ", ".join(words[:-1]) + conjunction + words[-1] if len(words) > 2 else conjunction.join(words)
            end = at + len(str(first[key]))
            messages = [dict(m, content=text[:at] + joined + text[end:]) if m.get("role") == "user" else m
                        for m in base.messages]
            answers = [base.ground_truth[0]] + [{name: {**gt, key: o.ground_truth[0][name][key]}} for o in others]
            return Case(id="synthetic_" + "+".join(c.id for c in [base, *others]),
                        category="live_parallel" if len(base.tools) == 1 else "live_parallel_multiple",
                        messages=messages, tools=base.tools, ground_truth=answers)
    return None


def synthetic_multi(sources: list[Case], n: int, seed: int = 0, triples: float = 0.25,
                    coordinated: float = 1.0) -> list[Case]:
    """``n`` multi-call queries from single-call ``sources``: a ``coordinated`` share
    of one query's value joined with others' (``coordinate``), the rest joins of two
    (or, for a ``triples`` share, three) distinct queries, a third of them on one tool
    where the sources allow."""
    rng = random.Random(seed)
    pool = [c for c in sources if single_call(c)]
    assert_not_test(pool)
    if len(pool) < 3:
        raise ToolprmError(f"synthetic joins need at least 3 single-call live queries, got {len(pool)}")
    by_tool: dict[str, list[Case]] = {}
    for c in pool:
        by_tool.setdefault(next(iter(c.ground_truth[0])), []).append(c)
    same = [v for v in by_tool.values() if len(v) > 1]
    out, seen, tries = [], set(), 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        k = 3 if rng.random() < triples else 2
        if same and rng.random() < coordinated:
            group = rng.choice(same)
            parts = rng.sample(group, min(k, len(group)))
            make = lambda: coordinate(parts[0], parts[1:], rng.choice(CONJUNCTIONS))  # noqa: E731
        else:
            parts = rng.sample(rng.choice(same), 2) if same and rng.random() < 1 / 3 else rng.sample(pool, k)
            make = lambda: join_cases(parts, rng.choice(JOINERS))  # noqa: E731
        key = tuple(c.id for c in parts)
        if key in seen:
            continue
        case = make()
        if case is not None:
            seen.add(key)
            out.append(case)
    return out


def sources(held: bool) -> list[Case]:
    """The live queries on one side of the held-out split that the builders draw from."""
    return [c for cat in SOURCE_CATEGORIES for c in bfcl_cases(cat)
            if held_out(c.id) == held and c.id not in KNOWN_UNSATISFIABLE]


@functools.lru_cache(maxsize=1)
def _coordinated() -> tuple[Case, ...]:
    made = synthetic_multi(sources(held=True), COORDINATED_SIZE, COORDINATED_SEED, coordinated=1.0)
    return tuple(dataclasses.replace(c, category="coordinated") for c in made)


def coordinated_cases() -> list[Case]:
    """The ``coordinated`` category (``load_cases("coordinated")``): ``COORDINATED_SIZE``
    coordinated multi-call queries built from held-out live queries only."""
    return list(_coordinated())
