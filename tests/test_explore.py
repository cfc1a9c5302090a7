"""Structured exploration: the discrete alternatives the grammar allows, grounded
proposals from the query, their bounds, and the oracle ceiling."""
from __future__ import annotations

import json
import math

import pytest

from toolprm import engine
from toolprm.bench.oracle import OracleScorer
from toolprm.bfcl import Case, load_cases
from toolprm.engine.explore import Exploration, closings, grounded, likeliest, plan
from toolprm.errors import ToolprmError
from toolprm.grammar import compile

TOOLS = [{"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14}, "flag": {"type": "boolean"},
    "note": {"type": ["string", "null"]}}, "required": ["city"]}},
    {"name": "get_time", "description": "Time", "parameters": {"type": "object", "properties": {
        "tz": {"type": "string"}}}}]


def test_next_steps_are_every_discrete_choice_and_nothing_else(smollm2_tokenizer):
    g = compile(TOOLS, smollm2_tokenizer, calls="any")
    s = g.start()
    assert s.next_steps() == [b"[]", b'[{"name": "get_time"', b'[{"name": "get_weather"']
    s = s.advance_bytes(b'[{"name": "get_weather"')
    # city is required: the arguments cannot close yet; every key can come first
    assert s.next_steps() == [b', "arguments": {"' + k.encode() + b'"'
                              for k in sorted(["city", "unit", "days", "flag", "note"])]
    assert s.advance_bytes(b', "arguments": {"city"').next_steps() is None  # a free string
    s = s.advance_bytes(b', "arguments": {"city": "Paris"')
    assert s.next_steps() == [b', "days"', b', "flag"', b', "note"', b', "unit"',
                              b'}}, {"name": "get_time"', b'}}, {"name": "get_weather"', b"}}]"]
    assert s.advance_bytes(b', "unit"').next_steps() == [b': "celsius"', b': "fahrenheit"']
    assert s.advance_bytes(b', "flag":').next_steps() == [b" false", b" true"]
    assert s.advance_bytes(b', "days":').next_steps() is None  # a free number
    for step in s.next_steps():  # every alternative is valid and reaches exactly one boundary
        after = s.advance_bytes(step)
        assert len(after.events) == len(s.events) + 1


def test_grounded_proposals_fit_the_parameter_and_the_grammar(smollm2_tokenizer):
    g = compile(TOOLS, smollm2_tokenizer, calls="any")
    q = 'Weather in "Los Angeles" and San Diego for 3 days, or 20 days, or 2.5 days'
    base = g.start().advance_bytes(b'[{"name": "get_weather", "arguments": {')
    city = grounded(base.advance_bytes(b'"city":'), q)
    texts = [json.loads(d) for d in city]
    assert texts[0] == "Los Angeles" and "San Diego" in texts and all(isinstance(t, str) for t in texts)
    days = [json.loads(d) for d in grounded(base.advance_bytes(b'"days":'), q)]
    assert days == [3]  # integers only, within the bounds: 20 > 14 and 2.5 is no integer
    for data in city:
        after = base.advance_bytes(b'"city":').advance_bytes(data)
        assert after.text.endswith(data.decode())
    # a later call of a parallel answer is not offered the span an earlier call used
    later = g.start().advance_bytes(b'[{"name": "get_weather", "arguments": {"city": "Los Angeles"}}, '
                                    b'{"name": "get_weather", "arguments": {"city":')
    assert "Los Angeles" not in [json.loads(d) for d in grounded(later, q)]


def test_candidate_bounds_are_respected(bpe_tokenizer):
    from test_search_tiny import _tiny
    policy = _tiny(bpe_tokenizer)
    tools = [{"name": f"tool_{c}", "description": "t", "parameters": {"type": "object", "properties": {
        "x": {"type": "string"}}, "required": ["x"]}} for c in "abcdefghij"]
    q = engine.prepare(policy.tokenizer, "use tool_c on alpha beta gamma delta", tools)
    dec = q.decoder(policy, "any", max_new_tokens=256)
    dec.feed_forced()
    k, conts, bound = plan(dec, 0, 3, Exploration(top_k=4), "use tool_c on alpha beta gamma delta")
    assert (k, len(conts), bound) == (0, 11, 4)  # 10 tools and [] offered, 4 to keep
    lps = dec.continuations_logprob(0, conts)
    added = dec.extend([(0, t) for t in conts])
    kept = likeliest(dec, added, [0] * len(added), {0: 4})
    assert len(kept) == 4 and kept == sorted(kept)
    assert sorted(lps[r - 1] for r in kept) == sorted(lps)[-4:]  # the 4 likeliest
    assert [dec.rows[r].trace.step_logprob for r in kept] == pytest.approx([lps[r - 1] for r in kept],
                                                                           abs=1e-4)
    dec.select([0])
    assert plan(dec, 0, 3, Exploration(top_k=20), "q")[2] == 20
    assert plan(dec, 0, 3, Exploration("sampling"), "q") == (3, [], 0)
    with pytest.raises(ToolprmError, match="exploration"):
        Exploration("everything")
    # near the budget only what still fits (with its shortest completion) is offered
    tight = q.decoder(policy, "any", max_new_tokens=24)
    tight.feed_forced()
    k, conts, _ = plan(tight, 0, 3, Exploration(top_k=20), "q")
    assert k == 0 and len(conts) == 1 and policy.tokenizer.decode(conts[0]).endswith("]")  # []


def test_oracle_scorer_needs_a_ground_truth():
    with pytest.raises(ToolprmError, match="ground truth"):
        OracleScorer(Case("live_simple_0-0-0", "live_simple", [], [], []))
    with pytest.raises(ToolprmError, match="ground truth"):
        OracleScorer({"ground_truth": []})
    with pytest.raises(ToolprmError, match="scorer"):
        engine.generate("q", TOOLS, strategy="fine_beam", scorer="oracle")


def test_oracle_fine_beam_finds_both_calls_of_a_parallel_case():
    """With structured exploration a second call is among the candidates, so a
    perfect scorer can keep it (a live case: nothing here touches the test set)."""
    case = next(c for c in load_cases("live_parallel") if c.id == "live_parallel_4-1-0")
    assert len(case.ground_truth) == 2  # Boston, USA and San Francisco, USA: both in the query
    r = engine.generate(case.messages, case.tools, strategy="fine_beam", m=2, n=2,
                        scorer=OracleScorer(case), max_new_tokens=160)
    assert len(r.calls) == 2, r.calls


def test_grounded_proposals_carry_the_bytes_the_grammar_forces_first(smollm2_tokenizer):
    """Right after a key the ":" may still be held back for the model (canonical
    forcing); a proposal must write it, or the grammar refuses every one."""
    g = compile(TOOLS, smollm2_tokenizer, calls="any")
    s = g.start().advance_bytes(b'[{"name": "get_weather", "arguments": {"city"')
    assert s.forced_bytes().startswith(b":")
    got = grounded(s, "Weather in Paris for 3 days")
    assert got and all(d.startswith(b': "') for d in got)
    assert "Paris" in [json.loads(d[2:]) for d in got]
    s = s.advance_bytes(b': "Paris", "days"')
    assert grounded(s, "Weather in Paris for 3 days") == [b": 3"]


def test_merged_candidates_are_scored_where_any_parent_had_a_choice(smollm2_tokenizer):
    """Regression: two parents propose the same outputs; the copy kept of each may be
    the other parent's, and each is still a choice among siblings, so it is scored
    (the unscored `]` of a one-call answer once outranked the right three calls)."""
    from toolprm.engine.search import merge_candidates
    g = compile(TOOLS, smollm2_tokenizer, calls="any")
    base = g.start().advance_bytes(b'[{"name": "get_time", "arguments": {"tz": "UTC"}')
    close, more = base.advance_bytes(b"}]"), base.advance_bytes(b'}, {"name": "get_time"')
    states = [close, more, close, more]
    keep, to_score = merge_candidates(states, [-1.0, -3.0, -2.0, -0.5], [0, 0, 1, 1], [False] * 4)
    assert keep == [0, 3] and to_score == [0, 3]
    # `"UTC"}` and `"UTC"}}` differ only by the `}` the grammar forces next: one candidate
    half, whole = base, base.advance_bytes(b"}")
    keep, to_score = merge_candidates([half, whole], [-1.0, -0.5], [0, 0], [False, False])
    assert keep == [1] and to_score == []
    # a parent with one distinct child had no choice: not scored
    keep, to_score = merge_candidates([close, close, more], [-1.0, -2.0, -1.0], [0, 0, 1], [False] * 3)
    assert keep == [0, 2] and to_score == []


def test_outputs_that_differ_only_in_argument_order_are_one_candidate(smollm2_tokenizer):
    """JSON objects are unordered: a beam that only reorders a call's arguments is the
    same call, and must not take the slot of a different one."""
    from toolprm.engine.search import merge_candidates, output_key
    g = compile(TOOLS, smollm2_tokenizer, calls="any")
    call = b'[{"name": "get_weather", "arguments": '
    a = g.start().advance_bytes(call + b'{"city": "Paris", "unit": "celsius"')
    b = g.start().advance_bytes(call + b'{"unit": "celsius", "city": "Paris"')
    other = g.start().advance_bytes(call + b'{"unit": "fahrenheit", "city": "Paris"')
    assert output_key(a) == output_key(b) != output_key(other)
    keep, to_score = merge_candidates([a, b, other], [-2.0, -1.0, -3.0], [0, 1, 1], [False] * 3)
    assert keep == [1, 2] and to_score == [1, 2]  # the likelier order is kept
    # the same arguments, but one awaits a further key: not the same partial output
    more = a.advance_bytes(b', "days"')
    assert output_key(more) != output_key(b.advance_bytes(b', "flag"')) != output_key(b)
    # reordered arguments of two finished lists: one output
    done_a, done_b = a.advance_bytes(b"}}]"), b.advance_bytes(b"}}]")
    assert done_a.is_final and output_key(done_a) == output_key(done_b) != output_key(a)
    # the order of the calls themselves is kept: a list is ordered
    t = b'{"name": "get_time", "arguments": {"tz": "UTC"}}'
    w = b'{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert output_key(g.start().advance_bytes(b"[" + t + b", " + w + b"]")) != \
        output_key(g.start().advance_bytes(b"[" + w + b", " + t + b"]"))


def test_a_copy_that_ended_on_a_repeated_call_yields_to_a_plain_close(smollm2_tokenizer):
    """With ``distinct_calls``, a list that ended on a repeated call reads as the list
    closed before it. Where another parent closed the same list plainly, merging must
    keep the plain copy, or dropping the repeat takes the close with it."""
    from toolprm.engine.search import merge_candidates, without_repeats
    g = compile(TOOLS, smollm2_tokenizer, calls="any")
    base = g.start().advance_bytes(b'[{"name": "get_time", "arguments": {"tz": "UTC"}')
    close, more = base.advance_bytes(b"}]"), base.advance_bytes(b'}, {"name": "get_weather"')
    states, logprobs, parent_of = [close, close, more], [-2.0, -1.0, -1.5], [0, 1, 1]
    repeated = [False, True, False]  # parent 1's copy is the likelier, and ended on a repeat
    for flags, kept in ((None, [1, 2]), (repeated, [0, 2])):
        keep, to_score = merge_candidates(states, logprobs, parent_of, [False] * 3, flags)
        assert keep == kept
        keep, _, dropped = without_repeats(keep, to_score, {i: repeated[i] for i in keep}, parent_of)
        # without the preference, the close is gone with the repeat
        assert (keep, dropped) == (([2], 1) if flags is None else ([0, 2], 0))


def test_array_proposals_are_lists_built_from_the_query(smollm2_tokenizer):
    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {
        "years": {"type": "array", "items": {"type": "integer"}},
        "interval": {"type": "array", "items": {"type": "number"}},
        "diet": {"type": "array", "items": {"type": "string"}}}}}]
    g = compile(tools, smollm2_tokenizer, calls="any")
    q = "Thai places with a vegan menu, from 2015 to 2021, for x from 1.5 to 3"

    def props(key: str) -> list:
        st = g.start().advance_bytes(b'[{"name": "f", "arguments": {"' + key.encode() + b'"')
        got = grounded(st, q)
        for d in got:  # each one valid by construction
            st.advance_bytes(d)
        return [json.loads(d[2:]) for d in got]

    years = props("years")
    assert [2015, 2021] in years and [2015, 2021, 3] in years  # 1.5 is no integer
    interval = props("interval")
    assert [1.5, 3.0] in interval and all(isinstance(x, float) for v in interval for x in v)
    assert ["vegan"] in props("diet")


ROUTE = [{"name": "route", "description": "Driving time between two places", "parameters": {
    "type": "object", "properties": {"start": {"type": "string"}, "end": {"type": "string"},
                                     "stops": {"type": "array", "items": {"type": "string"}},
                                     "mode": {"type": "string", "enum": ["car", "bike"]}},
    "required": ["start", "end"]}}]


def test_a_value_repeating_another_parameters_string_gives_way_to_a_sibling(smollm2_tokenizer):
    from toolprm.engine.explore import repeats_value
    from toolprm.engine.search import without_repeats
    g = compile(ROUTE, smollm2_tokenizer, calls="any")
    base = g.start().advance_bytes(b'[{"name": "route", "arguments": {"start": "Santa Barbara", "end"')
    since = len(base.events)
    same = base.advance_bytes(b': "santa-barbara"')  # equal once standardized as BFCL compares strings
    other = base.advance_bytes(b': "Los Angeles"')
    assert repeats_value(same.events, since) and not repeats_value(other.events, since)
    # a list item counts, and so does a repeat written in the step that reaches the value
    listed = base.advance_bytes(b': "Los Angeles", "stops"')
    assert repeats_value(listed.advance_bytes(b': ["Monterey", "Santa Barbara"]').events, len(listed.events))
    assert not repeats_value(listed.advance_bytes(b': ["Monterey"]').events, len(listed.events))
    # only strings of two or more characters, and only within one call
    two = g.start().advance_bytes(b'[{"name": "route", "arguments": {"start": "A", "end": "B"}}, '
                                  b'{"name": "route", "arguments": {"start": "A"')
    assert not repeats_value(two.events, 0)
    # parent 0 has a sibling that does not repeat: the repeat is dropped (and not scored);
    # parent 1's every candidate repeats: they stay
    keep, to_score, dropped = without_repeats([0, 1, 2, 3], [0, 1, 2, 3], [True, False, True, True], [0, 0, 1, 1])
    assert (keep, to_score, dropped) == ([1, 2, 3], [1, 2, 3], 1)
    with pytest.raises(ToolprmError, match="distinct_values"):
        Exploration(distinct_values="yes")


def test_fine_beam_with_distinct_values_writes_no_string_twice_in_a_call():
    """The real policy and grammar: with the rule, no call of the answer gives two
    parameters the same text. (Without it, this answer is {"end": "2023-01-01T00:00:00Z",
    "start": "2023-01-01T00:00:00Z"}.)"""
    query = "How long is the drive from Santa Barbara to Los Angeles with stops in Monterey?"
    r = engine.generate(query, ROUTE, strategy="fine_beam", m=2, n=2, max_new_tokens=96, distinct_values=True)
    assert r.calls and r.stats["repeats_dropped"] > 0
    for call in r.calls:
        texts = [v for v in call["arguments"].values() if isinstance(v, str)]
        assert len({t.lower() for t in texts}) == len(texts), r.text


def test_fine_beam_with_distinct_calls_drops_a_candidate_that_repeats_a_call():
    """The real policy, grammar and PRM on a live query where a second call's candidate
    writes the first call again (the decoder would end the list there): with the rule
    that candidate gives way to its siblings, and without it nothing is dropped. The
    answer never holds one call twice either way (the decoder's end on a repeat)."""
    from toolprm.bench.harness import model_tools
    case = next(c for c in load_cases("live_parallel_multiple") if c.id.startswith("live_parallel_multiple_14-"))
    for on in (False, True):
        r = engine.generate(case.messages, model_tools(case), strategy="fine_beam", m=4, n=2,
                            max_new_tokens=256, distinct_calls=on)
        assert (r.stats["calls_dropped"] > 0) == on
        keys = [json.dumps(c, sort_keys=True) for c in r.calls]
        assert len(set(keys)) == len(keys)
    with pytest.raises(ToolprmError, match="distinct_calls"):
        Exploration(distinct_calls=1)


def test_closings_find_a_value_whose_last_token_chose_another_key(smollm2_tokenizer):
    """`",` ends the string and commits to another key in one token: the value is
    offered closed too, every way that closes the arguments; a value that closed
    already, or one that ends at its quote, is not."""
    g = compile(TOOLS, smollm2_tokenizer, calls="any")
    parent = g.start().advance_bytes(b'[{"name": "get_weather", "arguments": {"city":')
    value, closes = closings(parent, parent.advance_bytes(b' "Paris",'))
    assert value == b' "Paris"'
    assert closes == [b'}}, {"name": "get_time"', b'}}, {"name": "get_weather"', b"}}]"]
    for c in closes:  # each is valid from the parent and reaches exactly one more step
        after = parent.advance_bytes(value + c)
        assert [e.kind for e in after.events[len(parent.events):]] == ["value", "end" if c == b"}}]" else "name"]
    assert closings(parent, parent.advance_bytes(b' "Paris"}')) is None
    assert closings(parent, parent.advance_bytes(b' "Paris"')) is None
    # a required key still missing: the arguments cannot close, so nothing to offer
    days = compile([{**TOOLS[0], "parameters": {**TOOLS[0]["parameters"], "required": ["city", "days"]}}],
                   smollm2_tokenizer, calls="any").start().advance_bytes(b'[{"name": "get_weather", "arguments": {"city":')
    assert closings(days, days.advance_bytes(b' "Paris",')) is None


class _Recorder:
    """The policy's confidence, recording every candidate it is shown."""
    def __init__(self):
        self.seen: list[list[str]] = []

    def score(self, context, candidates):
        self.seen.append([c.text for c in candidates])
        return [math.exp(c.step_logprob / max(1, c.step_tokens)) for c in candidates]


def test_fine_beam_offers_a_sampled_value_closed_with_close_values():
    """The real policy and grammar: each sampled value that chose another key with
    its last token is scored beside the same value closed; without the option no
    closed copy of such a value is offered."""
    query = "What's the weather in Paris? Use celsius."
    for on in (True, False):
        rec = _Recorder()
        r = engine.generate(query, TOOLS, strategy="fine_beam", m=8, n=2, max_new_tokens=96, scorer=rec,
                            close_values=on, temperature=1.0)
        assert r.calls and (r.stats["values_closed"] > 0) == on
        rounds = [set(texts) for texts in rec.seen]
        committed = [(t, rd) for rd in rounds for t in rd
                     if '"city": "' in t and t.endswith('",') and t.count('": ') == 3]
        assert committed, rec.seen  # the policy writes city first and goes on to a key
        closed = [any(x.startswith(t[:-1] + "}}") for x in rd) for t, rd in committed]
        assert all(closed) if on else not any(closed), (on, rec.seen)
