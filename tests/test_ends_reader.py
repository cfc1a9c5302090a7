"""The text end reader (reward.ends) and its training data (train.ends)."""
from __future__ import annotations

import json

import pytest

from toolprm.errors import ToolprmError
from toolprm.reward.ends import END_FEATURES, EndReader, end_features, load_end_reader
from toolprm.reward.features import ToolIndex
from toolprm.train import ends

from conftest import WEATHER


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
