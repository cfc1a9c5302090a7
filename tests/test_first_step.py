"""`toolprm bench first-step` with the real model and the shipped PRM."""
from __future__ import annotations

import json

import pytest
import torch

from toolprm.bench import first_step
from toolprm.bfcl import load_cases
from toolprm.engine import get_policy, prepare
from toolprm.errors import ToolprmError


def test_empty_list_probability_is_the_mass_of_closing_tokens():
    policy = get_policy()
    tok = policy.tokenizer
    case = load_cases("irrelevance", 1)[0]
    dec = prepare(tok, case.messages, case.tools).decoder(policy, "any", max_new_tokens=64)
    dec.feed_forced()
    assert dec.rows[0].state.text == "["
    p = first_step.empty_list_probability(dec)
    # The same mass by another route: allowed tokens whose text starts with "]" (after spaces).
    s = dec.rows[0]
    mask = torch.from_numpy(s.state.allowed_mask().copy())
    probs = torch.softmax(s.next_logits[:len(mask)].masked_fill(~mask, float("-inf")), -1)
    closing = [t for t in torch.nonzero(mask).flatten().tolist() if tok.decode([t]).lstrip().startswith("]")]
    assert closing and 0 < p < 1
    assert p == pytest.approx(float(probs[closing].sum()), rel=1e-5)


def test_command_prints_the_table_and_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert first_step.main(["--category", "irrelevance", "--category", "simple_python", "--limit", "1",
                            "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| irrelevance | 1 |" in text and "| simple_python | 1 |" in text
    assert "AUC of P([]) for irrelevance" in text
    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == ["irrelevance_0", "simple_python_0"]
    assert rows[1]["first"] == "name" and rows[1]["name"] == "calculate_triangle_area"
    assert all(0 <= r["prm"] <= 1 for r in rows)
    # P([]) recomputed here: one plain forward pass of the model over the prompt and "[", then a
    # softmax over the three tokens the grammar allows after "[" (']', '{', '{"'), read at ']'.
    policy, tok = get_policy(), get_policy().tokenizer
    bracket, close, brace, brace_quote = (tok.encode(t, add_special_tokens=False) for t in ("[", "]", "{", '{"'))
    assert all(len(t) == 1 for t in (bracket, close, brace, brace_quote))
    for row, cat in zip(rows, ("irrelevance", "simple_python")):
        case = load_cases(cat, 1)[0]
        q = prepare(tok, case.messages, case.tools)
        dec = q.decoder(policy, "any", max_new_tokens=64)
        dec.feed_forced()
        assert dec.rows[0].tokens == bracket  # the output starts with the forced "["
        mask = dec.rows[0].state.allowed_mask()
        assert sorted(i for i in range(len(mask)) if mask[i]) == sorted(close + brace + brace_quote)
        with torch.inference_mode():
            logits = policy.model(torch.tensor([q.prompt_ids + bracket])).logits[0, -1].double()
        want = torch.softmax(logits[close + brace + brace_quote], -1)[0].item()
        assert 0.001 < want < 0.1  # small: ']' is not what this model writes first
        assert row["p_empty"] == pytest.approx(want, rel=1e-4), (cat, row["p_empty"], want)
    # the table's mean P([]) per category (one case each) is that probability
    assert f"| irrelevance | 1 | {rows[0]['p_empty']:.3f} |" in text
    assert f"| simple_python | 1 | {rows[1]['p_empty']:.3f} |" in text
    # the [] row is scored by the same PRM: its single step is the end of an empty list
    assert all(0 < r["prm_empty"] < 1 for r in rows) and "AUC of PRM score of []" in text
    with pytest.raises(ToolprmError, match="--limit"):
        first_step.main(["--limit", "0"])
