"""The `toolprm` command itself (engine/cli.py:main): its usage, the dispatch of
`bench` and `train` subcommands to their modules, errors as one line with exit
code 1, and `generate` with a beam strategy on the real model."""
from __future__ import annotations

import json

from test_ceiling import _bounds_run

from toolprm.bfcl import load_cases
from toolprm.engine.cli import main


def test_usage_and_unknown_commands(capsys):
    assert main([]) == 2 and "usage: toolprm" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "bench {" in capsys.readouterr().out
    for argv in (["nonsense"], ["bench"], ["bench", "nonsense"], ["train", "nonsense"]):
        assert main(argv) == 2, argv
        assert "usage: toolprm" in capsys.readouterr().err


def test_bench_subcommands_are_dispatched_and_errors_are_one_line(tmp_path, capsys):
    cases = load_cases("live_simple", 2)
    run = _bounds_run(tmp_path / "run", {0}, cases, 2.0, 8)
    assert main(["bench", "bounds", f"only={run}", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "bounds.json").read_text())["chosen"] == "only"
    assert main(["bench", "ceiling", f"oracle={run}", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "ceiling.json").exists()
    capsys.readouterr()
    assert main(["bench", "bounds", str(run), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("toolprm: error: a run is NAME=DIR") and err.count("\n") == 1
    assert main(["bench", "bfcl", "--limit", "0"]) == 1
    assert "--limit must be a positive integer" in capsys.readouterr().err


def test_generate_with_fine_beam(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOOLPRM_THREADS", "1")
    tools = [{"name": "get_weather", "description": "Current weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    f = tmp_path / "tools.json"
    f.write_text(json.dumps(tools))
    assert main(["generate", "--tools", str(f), "--strategy", "fine_beam", "-m", "2", "-n", "1",
                 "--max-new-tokens", "64", "What is the weather in Paris?"]) == 0
    calls = json.loads(capsys.readouterr().out)
    # the one tool, with a city the query names: the structured candidates offer "Paris"
    assert calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


def test_train_all_on_a_tiny_slice_then_resume(tmp_path, capsys):
    """`toolprm train all` through the command: data (with the --max-step-tokens cut),
    a head and its metrics; `train eval --report` writes the table; `train data
    --resume` after an interruption (the last query's lines lost) rebuilds the data
    the uninterrupted run made."""
    import numpy as np
    data, ckpt, report = tmp_path / "data", tmp_path / "ckpt", tmp_path / "metrics.md"
    slice_ = ["--queries", "3", "--rollouts", "2", "--max-new-tokens", "48", "--max-prompt-tokens", "600",
              "--max-step-tokens", "3", "--val-share", "0.5", "--seed", "3", "--no-progress"]
    assert main(["train", "all", "--data", str(data), "--out", str(ckpt), "--epochs", "2", *slice_]) == 0
    out = capsys.readouterr().out
    assert "n_steps" in out and "| kind |" in out
    steps = [json.loads(line) for line in (data / "steps.jsonl").read_text().splitlines()]
    assert steps and max(s["sampled"] for s in steps) <= 3  # a longer step was cut, not recorded
    assert (ckpt / "model.safetensors").exists()
    assert main(["train", "eval", "--data", str(data), "--out", str(ckpt), "--report", str(report),
                 "--no-progress"]) == 0
    assert report.read_text().startswith("PRM on val queries")
    whole = {f: (data / f).read_bytes() for f in ("queries.jsonl", "steps.jsonl")}
    hidden = np.fromfile(data / "hidden.f32", dtype=np.float32)
    queries = whole["queries.jsonl"].decode().splitlines()
    first = json.loads(queries[0])["key"]
    kept = [line for line in whole["steps.jsonl"].decode().splitlines() if json.loads(line)["query"] == first]
    marked = json.dumps({**json.loads(kept[0]), "kept": True}, ensure_ascii=False)  # not recomputed
    (data / "queries.jsonl").write_text(queries[0] + "\n")
    (data / "steps.jsonl").write_text("\n".join([marked] + kept[1:]) + "\n" + '{"query": "broken')
    assert main(["train", "data", "--data", str(data), "--resume", *slice_]) == 0
    assert (data / "queries.jsonl").read_bytes() == whole["queries.jsonl"]
    assert (data / "steps.jsonl").read_text() == whole["steps.jsonl"].decode().replace(kept[0], marked, 1)
    assert np.allclose(np.fromfile(data / "hidden.f32", dtype=np.float32), hidden, atol=1e-4)


def test_demo_through_the_command(capsys, monkeypatch):
    """`toolprm demo` (what `make demo` runs, fine_beam with the shipped PRM): every
    query answered, the weather one with get_weather for Paris, the triangle with
    its numbers, the joke with no call."""
    monkeypatch.setenv("TOOLPRM_THREADS", "1")
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    calls = [json.loads(line[len("calls: "):]) for line in out.splitlines() if line.startswith("calls: ")]
    assert len(calls) == 4
    assert calls[0][0]["name"] == "get_weather" and calls[0][0]["arguments"]["city"] == "Paris"
    assert calls[1][0]["name"] == "calculate_triangle_area"
    assert {"base": 10, "height": 5}.items() <= calls[1][0]["arguments"].items()
    assert calls[3] == []


def test_bench_decode_through_the_command(tmp_path, monkeypatch):
    """`toolprm bench decode` on one prompt: every runtime and dtype is timed and
    its figures written (speed itself is the benchmark's business, not a test's)."""
    monkeypatch.setenv("TOOLPRM_THREADS", "1")
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--prompts", "1", "--steps", "1", "--cases", "1", "--beam-cases", "0",
                 "--thread-counts", "1", "--out", str(out)]) == 0
    s = json.loads(out.read_text())
    summary = s["summary"]
    assert {"transformers/float32", "lean/float32"} <= set(summary)
    for name, row in summary.items():
        if not name.startswith("_"):
            assert row["prefill_tok_s"] > 0 and row["step_ms_b1"] > 0 and row["greedy_s_case"] > 0, name
    assert summary["_default"]["config"] in summary and [r[0] for r in s["threads"]] == [1]
