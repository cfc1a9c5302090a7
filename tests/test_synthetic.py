"""Multi-call queries built from live ones (bfcl.synthetic), and the held-out
``coordinated`` category made of them."""
from __future__ import annotations

import pytest

from toolprm.bench.harness import _categories
from toolprm.bfcl import Case, assert_not_test, check, ground_truth_calls, held_out, load_cases
from toolprm.bfcl import synthetic
from toolprm.errors import ToolprmError

from conftest import WEATHER


def _case(cid: str, text: str, city: str, tools=(WEATHER,)) -> Case:
    return Case(cid, "live_simple", [{"role": "user", "content": text}], list(tools),
                [{"get_weather": {"location": [city], "unit": ["", "celsius"]}}])


def test_coordinate_joins_one_parameters_values_and_the_answer_checks():
    base = _case("live_simple_1-1-0", "What's the weather in Paris today?", "Paris")
    other = _case("live_simple_2-1-1", "Weather for Tokyo", "Tokyo")
    joined = synthetic.coordinate(base, [other], " and ")
    assert joined.messages[-1]["content"] == "What's the weather in Paris and Tokyo today?"
    assert joined.category == "live_parallel" and joined.id.startswith("synthetic_")
    calls = ground_truth_calls(joined)
    assert [c["arguments"]["location"] for c in calls] == ["Paris", "Tokyo"]
    assert check(joined, calls).correct and check(joined, list(reversed(calls))).correct
    assert not check(joined, calls[:1]).correct  # closing early is wrong
    # a value the query does not write out cannot be coordinated
    assert synthetic.coordinate(_case("live_simple_3-1-0", "How warm is it?", "Rome"), [other], " and ") is None


def test_join_cases_refuses_two_tools_of_one_name_with_different_specs():
    other_spec = dict(WEATHER, description="something else")
    a = _case("live_simple_1-1-0", "Weather in Paris?", "Paris")
    b = _case("live_simple_2-1-1", "Weather in Tokyo?", "Tokyo", tools=(other_spec,))
    assert synthetic.join_cases([a, b], " Also, ") is None
    c = synthetic.join_cases([a, _case("live_simple_4-1-0", "Weather in Oslo?", "Oslo")], " Also, ")
    assert c.messages[-1]["content"] == "Weather in Paris? Also, weather in Oslo?"
    assert len(c.tools) == 1 and len(c.ground_truth) == 2


def test_synthetic_queries_come_from_live_cases_only():
    with pytest.raises(ToolprmError, match="test set"):
        synthetic.synthetic_multi(load_cases("simple_python", 5) + load_cases("live_simple", 5), 3)
    made = synthetic.synthetic_multi(load_cases("live_simple", 80), 20, seed=1)
    assert made and all(c.id.startswith("synthetic_live_") for c in made)
    assert all(len(c.ground_truth) >= 2 for c in made)


def test_the_coordinated_category_is_built_from_held_out_live_queries_only():
    cases = load_cases("coordinated")
    assert len(cases) == synthetic.COORDINATED_SIZE
    assert all(c.category == "coordinated" for c in cases)
    assert_not_test(cases)
    # every source query of every case is on the held-out side of the split
    sources = [p for c in cases for p in c.id.removeprefix("synthetic_").split("+")]
    assert sources and all(held_out(s) for s in sources)
    assert all(len(c.ground_truth) >= 2 for c in cases)
    # the same cases on every load, and --limit spreads over them as over BFCL's
    assert [c.id for c in load_cases("coordinated", 10)] == [cases[i * 15].id for i in range(10)]


def test_coordinated_answers_check_right_in_any_order_and_closing_early_checks_wrong():
    for case in load_cases("coordinated", 25):
        calls = ground_truth_calls(case)
        assert check(case, calls).correct, case.id
        assert check(case, calls[::-1]).correct, case.id
        assert not check(case, calls[:-1]).correct, case.id


def test_the_bench_takes_coordinated_as_a_category():
    assert _categories(["coordinated", "live_simple"]) == ["coordinated", "live_simple"]
    with pytest.raises(ToolprmError, match="coordinated"):
        _categories(["coordinatd"])
