"""The text end reader (reward.ends) and its training data (train.ends)."""
from __future__ import annotations

import json

import pytest

from toolprm.bfcl import Case, check, ground_truth_calls, load_cases
from toolprm.errors import ToolprmError
from toolprm.reward.ends import END_FEATURES, EndReader, end_features, load_end_reader
from toolprm.reward.features import ToolIndex
from toolprm.train import ends

WEATHER = {"name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "dict", "required": ["location"],
                          "properties": {"location": {"type": "string", "description": "the city"},
                                         "unit": {"type": "string", "description": "celsius or fahrenheit"}}}}


def _case(cid: str, text: str, city: str, tools=(WEATHER,)) -> Case:
    return Case(cid, "live_simple", [{"role": "user", "content": text}], list(tools),
                [{"get_weather": {"location": [city], "unit": ["", "celsius"]}}])


def test_coordinate_joins_one_parameters_values_and_the_answer_checks():
    base = _case("live_simple_1-1-0", "What's the weather in Paris today?", "Paris")
    other = _case("live_simple_2-1-1", "Weather for Tokyo", "Tokyo")
    joined = ends.coordinate(base, [other], " and ")
    assert joined.messages[-1]["content"] == "What's the weather in Paris and Tokyo today?"
    assert joined.category == "live_parallel" and joined.id.startswith("synthetic_")
    calls = ground_truth_calls(joined)
    assert [c["arguments"]["location"] for c in calls] == ["Paris", "Tokyo"]
    assert check(joined, calls).correct and check(joined, list(reversed(calls))).correct
    assert not check(joined, calls[:1]).correct  # closing early is wrong
    # a value the query does not write out cannot be coordinated
    assert ends.coordinate(_case("live_simple_3-1-0", "How warm is it?", "Rome"), [other], " and ") is None


def test_join_cases_refuses_two_tools_of_one_name_with_different_specs():
    other_spec = dict(WEATHER, description="something else")
    a = _case("live_simple_1-1-0", "Weather in Paris?", "Paris")
    b = _case("live_simple_2-1-1", "Weather in Tokyo?", "Tokyo", tools=(other_spec,))
    assert ends.join_cases([a, b], " Also, ") is None
    c = ends.join_cases([a, _case("live_simple_4-1-0", "Weather in Oslo?", "Oslo")], " Also, ")
    assert c.messages[-1]["content"] == "Weather in Paris? Also, weather in Oslo?"
    assert len(c.tools) == 1 and len(c.ground_truth) == 2


def test_synthetic_queries_come_from_live_cases_only():
    with pytest.raises(ToolprmError, match="test set"):
        ends.synthetic_multi(load_cases("simple_python", 5) + load_cases("live_simple", 5), 3)
    made = ends.synthetic_multi(load_cases("live_simple", 80), 20, seed=1)
    assert made and all(c.id.startswith("synthetic_live_") for c in made)
    assert all(len(c.ground_truth) >= 2 for c in made)


def test_end_features_see_what_the_calls_leave_unused():
    index = ToolIndex([{"role": "user", "content": "What's the weather in Paris and Tokyo?"}], [WEATHER])
    after_one = dict(zip(END_FEATURES, end_features(index, [{"name": "get_weather",
                                                             "arguments": {"location": "Paris"}}])))
    after_two = dict(zip(END_FEATURES, end_features(index, [
        {"name": "get_weather", "arguments": {"location": "Paris"}},
        {"name": "get_weather", "arguments": {"location": "Tokyo"}}])))
    assert after_one["coordination_cue"] > 0 and after_two["coordination_cue"] == 0
    assert after_one["unused_words"] > after_two["unused_words"] == 0
    assert after_two["calls_so_far"] > after_one["calls_so_far"]


def test_a_quick_real_train_writes_a_reader_that_loads_and_reads(tmp_path):
    out = tmp_path / "ends.json"
    assert ends.main(["--synthetic", "60", "--out", str(out)]) == 0
    reader = load_end_reader(out)
    meta = json.loads(out.read_text())
    assert meta["data"]["synthetic_queries"] == 60 and "held-out live" in meta["metrics"]
    assert (tmp_path / "ends.md").read_text().count("|") > 10
    index = ToolIndex([{"role": "user", "content": "What's the weather in Paris and Tokyo?"}], [WEATHER])
    one = reader.p_more(index, [{"name": "get_weather", "arguments": {"location": "Paris"}}])
    two = reader.p_more(index, [{"name": "get_weather", "arguments": {"location": "Paris"}},
                                {"name": "get_weather", "arguments": {"location": "Tokyo"}}])
    assert one > two


def test_a_reader_of_other_features_is_refused(tmp_path):
    path = tmp_path / "ends.json"
    EndReader([0.0] * len(END_FEATURES), 0.0, [0.0] * len(END_FEATURES), [1.0] * len(END_FEATURES)).save(path)
    assert load_end_reader(path).p_more_features([0.0] * len(END_FEATURES)) == pytest.approx(0.5)
    d = json.loads(path.read_text())
    path.write_text(json.dumps(dict(d, features=d["features"][:-1] + ["another"])))
    with pytest.raises(ToolprmError, match="retrain it"):
        load_end_reader(path)
    with pytest.raises(ToolprmError, match="no end reader"):
        load_end_reader(tmp_path / "missing.json")
    assert load_end_reader().meta["command"].startswith("toolprm train ends")  # the shipped one
