"""`toolprm bench ends`: the coordination cue by hand, and the boundaries of a real run."""
from __future__ import annotations

import json

import pytest

from toolprm.bench import ends
from toolprm.bench.ends import coordination_cue


def _w(city):
    return {"name": "weather", "arguments": {"city": city}}


def test_coordination_cue_counts_unused_partners_of_used_values():
    q = "What is the weather in Paris and Tokyo?"
    assert coordination_cue(q, [_w("Paris")]) == 1          # Tokyo is still due
    assert coordination_cue(q, [_w("Paris"), _w("Tokyo")]) == 0
    assert coordination_cue("What is the weather in Paris?", [_w("Paris")]) == 0
    assert coordination_cue("Weather in Tokyo, Paris", [_w("Paris")]) == 1  # the partner before it
    assert coordination_cue("Weather in Tokyo, Paris", [_w("Tokyo"), _w("Paris")]) == 0
    # a value not found in the query, and booleans, say nothing
    assert coordination_cue(q, [{"name": "f", "arguments": {"flag": True, "city": "Rome"}}]) == 0


def test_summary_splits_and_scores():
    recs = [{"id": f"q{i}", "category": "live_parallel", "held_out": i >= 4, "k": 0, "calls": 2,
             "goes_on": i % 2 == 0, "policy": p, "cue": c}
            for i, (p, c) in enumerate([(0.9, 1), (0.2, 0), (0.4, 2), (0.6, 0), (0.7, 1), (0.1, 0)])]
    s = ends.summarize(recs)
    tr, ho = s["splits"]["train"], s["splits"]["held-out"]
    assert (tr["boundaries"], tr["goes_on"], ho["boundaries"]) == (4, 2, 2)
    # train: goes on at 0.9, 0.4; closes at 0.2, 0.6 -> 3 of 4 pairs ordered right
    assert tr["readers"]["policy"]["auc"] == pytest.approx(0.75)
    assert tr["readers"]["policy"]["balanced_accuracy"] == pytest.approx(0.5)
    assert tr["readers"]["cue"]["auc"] == pytest.approx(1.0)
    assert ho["readers"]["cue"]["balanced_accuracy"] == pytest.approx(1.0)
    assert "| policy |" in ends.table(s, "toolprm bench ends")


def test_a_real_run_reads_every_gold_boundary(tmp_path):
    out = tmp_path / "ends"
    assert ends.main(["--limit", "2", "--out", str(out)]) == 0
    recs = [json.loads(l) for l in (out / "cases.jsonl").read_text().splitlines()]
    skipped = (out / "skipped.txt").read_text().split()
    assert len({r["id"] for r in recs}) + len(skipped) == 8  # 2 queries of each of the 4 categories
    for r in recs:
        assert 0.0 < r["policy"] < 1.0 and r["goes_on"] == (r["k"] < r["calls"] - 1)
    by_id = {}
    for r in recs:
        by_id.setdefault(r["id"], []).append(r["k"])
    assert all(ks == list(range(len(ks))) for ks in by_id.values())
    assert any(r["goes_on"] for r in recs) and any(not r["goes_on"] for r in recs)
    # resumes without redoing anything
    assert ends.main(["--limit", "2", "--out", str(out)]) == 0
    assert len((out / "cases.jsonl").read_text().splitlines()) == len(recs)
    assert json.loads((out / "summary.json").read_text())["boundaries"] == len(recs)
