"""Golden outputs: greedy and fine_beam on a fixed set of BFCL live cases, with the
shipped PRM, must stay exactly what they were when ``tests/golden/outputs-KIND.json``
was recorded (the same seed gives the same output). A refactor must not change
them; a change of behaviour on purpose re-records them, and its commit says why:

    TOOLPRM_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

One recording per CPU kind (``intel``, ``amd``): torch's fp32 matmul kernels do
not always round alike, and a sampled or scored step close to a tie goes the other
way (live_multiple_0's fine_beam output; every other output and score of the set is
the same). It is not the CPU kind alone: a full test run on an AMD EPYC gave the
Intel recording's output once, where the same code gave the AMD one in four other
runs there (2026-12-07). So an output passes if it equals either recording of the
current code. Re-recording on one kind removes the other kinds' files, which hold
the old behaviour: a machine of such a kind skips, with a message that says how to
record its own, until one does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def cpu_kind() -> str:
    from toolprm.engine.lean import cpu_model
    model = cpu_model().lower()
    return next((k for k in ("intel", "amd") if k in model), "other")


GOLDEN = Path(__file__).parent / "golden" / f"outputs-{cpu_kind()}.json"
CASES = {"live_simple": 2, "live_multiple": 2, "live_parallel": 1, "live_parallel_multiple": 1,
         "live_irrelevance": 1}
RUNS = {"greedy": {"strategy": "greedy"}, "fine_beam": {"strategy": "fine_beam", "m": 4, "n": 2}}


def _cases():
    from toolprm.bfcl import load_cases
    return [c for cat, k in CASES.items() for c in load_cases(cat, k)]


def _outputs() -> dict:
    from toolprm.engine import generate
    out = {}
    for case in _cases():
        for label, kw in RUNS.items():
            r = generate(case.messages, case.tools, calls="any", seed=0, max_new_tokens=256, **kw)
            out[f"{case.id} {label}"] = {
                "text": r.text, "calls": r.calls,
                "steps": [[s["kind"], s["call"], s["key"], s["text"], s["offset"],
                           None if s["score"] is None else round(s["score"], 5)] for s in r.steps]}
    return out


def test_golden_outputs_unchanged():
    got = _outputs()
    if os.environ.get("TOOLPRM_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
        for stale in GOLDEN.parent.glob("outputs-*.json"):
            if stale != GOLDEN:
                stale.unlink()
        pytest.skip(f"re-recorded {GOLDEN}")
    if not GOLDEN.exists():
        pytest.skip(f"no golden outputs recorded for this CPU ({cpu_kind()}): record them with "
                    "TOOLPRM_REGEN_GOLDEN=1 (see this module's docstring)")
    want = json.loads(GOLDEN.read_text())
    others = [json.loads(p.read_text()) for p in sorted(GOLDEN.parent.glob("outputs-*.json")) if p != GOLDEN]
    assert sorted(got) == sorted(want)
    for key in want:
        recorded = [want[key]] + [o[key] for o in others if key in o]
        assert any(_same(got[key], r) for r in recorded), (key, got[key]["text"], want[key]["text"])


def _same(a: dict, b: dict) -> bool:
    """One output against a recording: the same text, calls and steps, scores to 2e-4."""
    if a["text"] != b["text"] or a["calls"] != b["calls"] or len(a["steps"]) != len(b["steps"]):
        return False
    for x, y in zip(a["steps"], b["steps"]):
        if x[:5] != y[:5] or (x[5] is None) != (y[5] is None):
            return False
        if x[5] is not None and abs(x[5] - y[5]) > 2e-4:
            return False
    return True
