"""BFCL's Java and JavaScript categories and BFCL's own Non-Live AST summary.

No mocks: specs are compared with BFCL's own pre-processing, verdicts come from
bfcl_eval's ast_checker, and the summary is checked on hand-computed numbers.
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from toolprm.bfcl import (CATEGORIES, KNOWN_UNSATISFIABLE, LANGUAGE_CATEGORIES, TEST_CATEGORIES, Case,
                          assert_not_test, call_ok, category_of, check, ground_truth_calls, language_of,
                          load_cases, non_live_summary, param_ok)
from toolprm.errors import ToolprmError, ToolSchemaError
from toolprm.grammar import compile, normalize_tools
from toolprm.grammar.languages import JAVA_TYPES, JAVASCRIPT_TYPES

LANGUAGE = {"simple_java": "java", "simple_javascript": "javascript"}
SIZES = {"simple_java": 100, "simple_javascript": 50}


def _case(case_id: str) -> Case:
    (case,) = [c for c in load_cases(category_of(case_id)) if c.id == case_id]
    return case


# --------------------------------------------------------------------------- categories


def test_categories_load_and_stay_out_of_the_default_run():
    assert LANGUAGE_CATEGORIES == ("simple_java", "simple_javascript")
    # TEST_CATEGORIES is the default run of bench bfcl / bench scaling: unchanged
    assert not set(LANGUAGE_CATEGORIES) & set(CATEGORIES)
    for category, n in SIZES.items():
        cases = load_cases(category)
        assert len(cases) == n and len({c.id for c in cases}) == n
        assert all(c.category == category and category_of(c.id) == category for c in cases)
        assert all(len(c.ground_truth) == 1 and len(c.tools) == 1 for c in cases)
        assert [c.id for c in load_cases(category, limit=4)] == [cases[i].id for i in (0, n // 4, n // 2, 3 * n // 4)]
        assert language_of(category) == LANGUAGE[category]
    assert language_of("simple_python") == language_of("live_multiple") == "python"


@pytest.mark.parametrize("category", LANGUAGE_CATEGORIES)
def test_guard_refuses_every_java_and_javascript_case(category):
    cases = load_cases(category)
    for case in cases:
        with pytest.raises(ToolprmError, match="simple_java"):
            assert_not_test(case.id)
    with pytest.raises(ToolprmError, match="never be trained"):
        assert_not_test(cases)
    with pytest.raises(ToolprmError):
        assert_not_test(["live_simple_0-0-0", cases[-1].id + "#masked"])


# --------------------------------------------------------------------------- specs


def test_type_names_are_bfcls():
    from bfcl_eval.constants.type_mappings import JAVA_TYPE_CONVERSION, JS_TYPE_CONVERSION

    assert JAVA_TYPES == set(JAVA_TYPE_CONVERSION)
    assert JAVASCRIPT_TYPES == set(JS_TYPE_CONVERSION)


@pytest.mark.parametrize("category", LANGUAGE_CATEGORIES)
def test_specs_normalise_as_bfcl_presents_them(category):
    """Every spec normalises, and to exactly what BFCL's own pre-processing
    (``_func_doc_language_specific_pre_processing``) shows a model."""
    from bfcl_eval.utils import _func_doc_language_specific_pre_processing as bfcl_edit

    language = LANGUAGE[category]
    for case in load_cases(category):
        shipped = copy.deepcopy(case.tools)
        ours = normalize_tools(case.tools, language=language)
        bfcls = normalize_tools(bfcl_edit(copy.deepcopy(case.tools), category))
        assert [t.spec() for t in ours] == [t.spec() for t in bfcls], case.id
        for tool in ours:
            assert all(p["type"] == "string" for p in tool.parameters["properties"].values()), case.id
            assert tool.description.endswith(" syntax.")
        assert case.tools == shipped  # left as they are: BFCL's checker reads them


def test_hints_word_for_word():
    tool = {"name": "f", "description": "Does f.", "parameters": {"type": "dict", "properties": {
        "a": {"type": "long", "description": "A."},
        "b": {"type": "ArrayList", "description": "B.", "items": {"type": "String"}},
        "c": {"type": "any", "description": "C."}}, "required": ["a"]}}
    (norm,) = normalize_tools([tool], language="java")
    props = norm.parameters["properties"]
    assert norm.description == "Does f. Note that the provided function is in Java 8 SDK syntax."
    assert props["a"] == {"type": "string",
                          "description": "A. This is Java long type parameter in string representation."}
    assert props["b"]["description"] == ("B. This is Java ArrayList type parameter in string representation. "
                                         "The list elements are of type String; they are not in string "
                                         "representation.")
    assert "items" not in props["b"]
    assert props["c"]["description"] == ("C. This parameter can be of any type of Java object in string "
                                         "representation.")
    assert norm.parameters["required"] == ["a"] and norm.parameters["additionalProperties"] is False
    js = {"name": "g", "parameters": {"type": "dict", "properties": {
        "o": {"type": "dict", "description": "O.", "properties": {"k": {"type": "string"}}}}}}
    (norm,) = normalize_tools(js, language="javascript")
    assert norm.description == "Note that the provided function is in JavaScript syntax."
    assert norm.parameters["properties"]["o"] == {"type": "string", "description": (
        "O. This is JavaScript dict type parameter in string representation. The dictionary entries have "
        'the following schema; they are not in string representation. {"k": {"type": "string"}}')}
    # the same spec read as Python keeps its dict
    (py,) = normalize_tools(js)
    assert py.parameters["properties"]["o"]["type"] == "object"


@pytest.mark.parametrize("language, spec, where, words", [
    ("java", {"type": "Strng"}, "properties.name.type", ["'Strng'", "'name'", "Java"]),
    ("java", {"type": "Boolean"}, "properties.name.type", ["'Boolean'", "Java"]),   # JavaScript's name
    ("javascript", {"type": "HashMap"}, "properties.name.type", ["'HashMap'", "JavaScript"]),
    ("javascript", {"description": "no type"}, "properties.name.type", ["None", "'name'"]),
    ("java", {"type": "Array"}, "properties.name.items.type", ["element type None", "'name'"]),
    ("javascript", {"type": "array", "items": {"type": "str"}}, "properties.name.items.type",
     ["element type 'str'", "'name'"]),
    ("java", "String", "properties.name", ["'name'", "object schema"]),
])
def test_unknown_type_is_refused(language, spec, where, words):
    tool = {"name": "lookup", "description": "", "parameters": {"type": "dict", "properties": {"name": spec}}}
    with pytest.raises(ToolSchemaError) as info:
        normalize_tools([tool], language=language)
    message = str(info.value)
    assert message.startswith(f"tool 'lookup' at $[0].parameters.{where}: "), message
    for word in words:
        assert word in message, message
    assert info.value.tool == "lookup"


def test_unknown_language_is_refused():
    with pytest.raises(ToolSchemaError, match="language must be one of python, java, javascript"):
        normalize_tools([{"name": "f"}], language="kotlin")


def test_grammar_takes_the_normalised_specs(smollm2_tokenizer):
    """The decoding grammar compiles them and accepts BFCL's answers as literals,
    token by token (a few cases each: compiling is the slow part)."""
    for category in LANGUAGE_CATEGORIES:
        for case in load_cases(category, limit=6):
            tools = normalize_tools(case.tools, language=LANGUAGE[category])
            g = compile(tools, smollm2_tokenizer, calls="one")
            calls = ground_truth_calls(case)
            validator = jsonschema.Draft202012Validator(g.schema)
            validator.validate(calls)
            s = g.start()
            for t in smollm2_tokenizer.encode(json.dumps(calls), add_special_tokens=False):
                assert s.allowed_mask()[t], (case.id, s.text)
                s = s.advance(t)
            assert s.is_final and json.loads(s.text) == calls
            # a bare JSON value where BFCL wants a string is outside the grammar
            bad = [{"name": calls[0]["name"], "arguments": {k: 1 for k in calls[0]["arguments"]}}]
            assert calls[0]["arguments"] and not validator.is_valid(bad)


# --------------------------------------------------------------------------- checker


@pytest.mark.parametrize("category", LANGUAGE_CATEGORIES)
def test_ground_truth_round_trips_through_bfcls_checker(category):
    """BFCL's answers, written as the literal strings BFCL asks for, pass BFCL's
    checker under the category's Language, except the defective answer keys."""
    failed = {}
    cases = load_cases(category)
    for case in cases:
        calls = ground_truth_calls(case)
        assert all(isinstance(v, str) for call in calls for v in call["arguments"].values()), calls
        verdict = check(case, calls)
        assert verdict.valid
        if not verdict.correct:
            failed[case.id] = verdict.errors
    assert set(failed) == {c.id for c in cases} & KNOWN_UNSATISFIABLE, failed
    assert len(failed) == {"simple_java": 3, "simple_javascript": 0}[category]


def test_known_unsatisfiable_java_cases_really_are():
    # an ArrayList of "any": every element parses to a string, the answer has 42 and true
    case = _case("simple_java_36")
    (call,) = ground_truth_calls(case)
    for text in ('new ArrayList<>(Arrays.asList("userID", 42, "username", "johndoe", "isActive", true))',
                 "new ArrayList<>(Arrays.asList(userID, 42, username, johndoe, isActive, true))"):
        call["arguments"]["parts"] = text
        assert check(case, [call]).error_type == "value_error:list/tuple"
    # the HashMap answer's value is a bare string: only one of its characters passes
    case = _case("simple_java_64")
    assert case.ground_truth[0]["DateScriptFieldType.createFieldType"]["meta"] == [{"format": "epoch_millis"}]
    (call,) = ground_truth_calls(case)
    assert not check(case, [call]).correct
    call["arguments"]["meta"] = 'new HashMap<String, Object>() {{ put("format", "e"); }}'
    assert check(case, [call]).correct


def test_literals_by_type():
    (call,) = ground_truth_calls(_case("simple_java_22"))  # long, ArrayList<long>
    assert call["arguments"]["ids"] == "new ArrayList<>(Arrays.asList(101L, 202L, 303L))"
    (call,) = ground_truth_calls(_case("simple_java_27"))  # Array of integer
    assert call["arguments"]["nums"] == "new int[]{2, 7, 11, 15}"
    (call,) = ground_truth_calls(_case("simple_java_1"))  # HashMap, boolean
    assert call["arguments"]["params"] == ('new HashMap<String, Object>() {{ put("limit", 50); '
                                          'put("schemaFilter", "public"); }}')
    assert call["arguments"]["useShortName"] == "true"
    (call,) = ground_truth_calls(_case("simple_javascript_0"))  # String, Boolean
    assert call["arguments"] == {"inputField": "userInputField", "isComplete": "true"}
    (call,) = ground_truth_calls(_case("simple_javascript_3"))  # array of float
    assert call["arguments"]["coordinates"] == "[60, 30]"


def test_wrong_values_are_wrong():
    case = _case("simple_javascript_0")
    (call,) = ground_truth_calls(case)
    assert check(case, [call]).correct
    assert check(case, [{"name": call["name"], "arguments": dict(call["arguments"], isComplete="false")}]
                 ).error_type == "value_error:others"
    assert check(case, [{"name": call["name"], "arguments": dict(call["arguments"], inputField='"other"')}]
                 ).error_type == "value_error:string"
    # a JSON value where BFCL wants the literal's string: JavaScript's type error
    verdict = check(case, [{"name": call["name"], "arguments": dict(call["arguments"], isComplete=True)}])
    assert verdict.error_type == "type_error:js" and not verdict.correct
    case = _case("simple_java_22")
    (call,) = ground_truth_calls(case)
    assert check(case, [call]).correct
    ids = "new ArrayList<>(Arrays.asList(101L, 202L, 304L))"
    assert not check(case, [{"name": call["name"], "arguments": dict(call["arguments"], ids=ids)}]).correct
    verdict = check(case, [{"name": call["name"], "arguments": dict(call["arguments"], ids=[101, 202, 303])}])
    assert verdict.error_type == "type_error:java"
    assert not check(case, [call, call]).correct  # simple: exactly one call
    # the per-parameter and per-call checks (step labels) use the same Language
    (name, answer), = case.ground_truth[0].items()
    assert param_ok(case, name, "ids", call["arguments"]["ids"], answer["ids"])
    assert not param_ok(case, name, "ids", [101, 202, 303], answer["ids"])
    assert call_ok(case, call, (name, answer))
    assert not call_ok(case, dict(call, arguments=dict(call["arguments"], newStatus="3")), (name, answer))


# --------------------------------------------------------------------------- summary


HAND = {"simple_python": (300, 400), "simple_java": (60, 100), "simple_javascript": (30, 50),
        "multiple": (150, 200), "parallel": (100, 200), "parallel_multiple": (90, 200),
        "irrelevance": (180, 240), "live_simple": (1, 258)}


def test_summary_on_a_hand_computed_example():
    s = non_live_summary(HAND)
    assert s.accuracy["simple_java"] == 0.6 and s.accuracy["irrelevance"] == 0.75
    # Simple AST: the unweighted mean of .75, .6, .6 (by cases it would be 390/550 = .709)
    assert s.simple == pytest.approx(0.65)
    # AST Summary: the unweighted mean of Simple .65, multiple .75, parallel .5, parallel_multiple .45
    assert s.non_live_ast == pytest.approx(2.35 / 4)  # 0.5875
    # this project's older figure: simple_python in place of Simple
    assert s.python_only == pytest.approx(2.45 / 4)  # 0.6125
    assert s.irrelevance == 0.75 and s.missing == ()
    rows = dict(s.rows())
    assert rows["AST Summary (Non-Live AST)"] == s.non_live_ast and rows["Java Simple AST"] == 0.6
    assert list(rows)[-1] == "Python-only non-live mean (not BFCL's)"


def test_summary_missing_and_bad_counts():
    s = non_live_summary({k: v for k, v in HAND.items() if k != "simple_java"})
    assert s.simple is None and s.non_live_ast is None  # BFCL shows "N/A"
    assert s.python_only == pytest.approx(2.45 / 4) and s.missing == ("simple_java",)
    s = non_live_summary({k: v for k, v in HAND.items() if k != "irrelevance"})
    assert s.non_live_ast == pytest.approx(0.5875) and s.irrelevance is None
    for bad in [(5, 4), (-1, 4), (1, 0), (1.0, 2), (True, 2)]:
        with pytest.raises(ToolprmError, match="multiple"):
            non_live_summary(dict(HAND, multiple=bad))


def test_summary_of_bfcls_own_ground_truth():
    """All-correct counts give 100. Scoring BFCL's ground truth through the checker
    gives 100 everywhere but simple_java (97/100: its three defective answer keys)."""
    sizes = {c: len(load_cases(c)) for c in TEST_CATEGORIES + LANGUAGE_CATEGORIES}
    s = non_live_summary({c: (n, n) for c, n in sizes.items()})
    assert s.non_live_ast == s.simple == s.python_only == s.irrelevance == 1.0
    counts = {}
    for category in sizes:
        cases = load_cases(category)
        counts[category] = (sum(check(c, ground_truth_calls(c)).correct for c in cases), len(cases))
    assert counts["simple_java"] == (97, 100)
    assert all(correct == n for c, (correct, n) in counts.items() if c != "simple_java"), counts
    s = non_live_summary(counts)
    assert s.simple == pytest.approx((1 + 0.97 + 1) / 3)
    assert s.non_live_ast == pytest.approx(((1 + 0.97 + 1) / 3 + 3) / 4)  # 0.9975
    assert s.python_only == 1.0


# --------------------------------------------------------------------------- harness


def test_harness_takes_the_categories():
    from toolprm.bench.harness import _categories, calls_for, model_tools

    assert _categories(None) == list(TEST_CATEGORIES)
    assert _categories(["simple_java,simple_javascript"]) == list(LANGUAGE_CATEGORIES)
    assert _categories(["non_live"]) == list(TEST_CATEGORIES + LANGUAGE_CATEGORIES)
    assert calls_for("simple_java", "oracle") == "one"
    with pytest.raises(ToolprmError, match="simple_javascript"):
        _categories(["simple_rust"])
    case = load_cases("simple_java", limit=1)[0]
    assert [t.spec() for t in model_tools(case)] == [t.spec() for t in normalize_tools(case.tools, language="java")]
    python = load_cases("simple_python", limit=1)[0]
    assert model_tools(python) is python.tools
