"""The lean runtime (engine/lean.py): the shared-prompt KV cache against transformers'
own (a copy of the prompt per row), forks against unforked decoding, the int4
repacking, and the dtype option from generate() to the CLI and the bench."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from toolprm import engine
from toolprm.bench import harness
from toolprm.bench.report import RunConfig
from toolprm.bfcl import load_cases
from toolprm.engine.decode import Decoder, buckets
from toolprm.engine.lean import LeanLM, Linear, cpu_flags, resolve_dtype, supports
from toolprm.engine.models import get_policy, make_policy
from toolprm.engine.runners import LeanRunner, TransformersRunner
from toolprm.engine.query import prepare
from toolprm.errors import ToolprmError

DTYPES = ("float32", "bfloat16", "int4")


@pytest.fixture(scope="module")
def hf():
    p = get_policy(dtype="float32")
    return p.model, p.tokenizer


@pytest.fixture(scope="module")
def lms(hf):
    return {d: LeanLM(hf[0], d) for d in DTYPES}


@pytest.fixture(scope="module")
def ids(hf):
    case = load_cases("live_simple", 1)[0]
    return prepare(hf[1], case.messages, case.tools).prompt_ids


def _feed_plan(lm, cache, tokens, plans, start):
    """Feed ``tokens`` to every row of ``cache``, row r in chunks ``plans[r]`` (left
    padded to each chunk's width); the logits of every fed token, per row."""
    rows = len(plans)
    done, outs = [0] * rows, [[] for _ in range(rows)]
    for step in range(len(plans[0])):
        ns = [p[step] for p in plans]
        w = max(ns)
        x = torch.zeros(rows, w, dtype=torch.long)
        valid = torch.zeros(rows, w, dtype=torch.bool)
        pos = torch.zeros(rows, w, dtype=torch.long)
        for r, n in enumerate(ns):
            if n:
                x[r, w - n:] = torch.tensor(tokens[done[r]:done[r] + n])
                valid[r, w - n:] = True
                pos[r, w - n:] = torch.arange(start + done[r], start + done[r] + n)
        logits, _ = lm.step(cache, x, valid, pos, keep=0)
        for r, n in enumerate(ns):
            if n:
                outs[r].append(logits[r, w - n:])
                done[r] += n
    return [torch.cat(o) for o in outs]


def test_shared_prompt_gives_transformers_logits_in_fp32(hf, lms, ids):
    """Rows forked from one prompt copy, fed in chunks of different widths with left
    padding, give the logits transformers gives the whole sequence (its cache holds
    the prompt in every row); and the same final hidden states."""
    model, _ = hf
    prompt, tail = ids[:-12], ids[-12:]
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    cache, logits, hidden = lms["float32"].prefill(prompt, keep=0)
    assert torch.allclose(logits[0], ref.logits[0, :len(prompt)], atol=2e-3)
    assert torch.allclose(hidden[0], ref.hidden_states[-1][0, :len(prompt)], atol=2e-3)
    cache.select(torch.tensor([0, 0, 0]))
    rows = _feed_plan(lms["float32"], cache, tail, [[5, 7], [2, 10], [12, 0]], len(prompt))
    for got in rows:
        assert torch.allclose(got, ref.logits[0, len(prompt):], atol=2e-3)
    # the prompt is held once, whatever the number of rows
    assert all(k.shape[0] == model.config.num_key_value_heads for k in cache.prefix_k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_fork_gives_the_logits_of_its_parent_alone(lms, ids, dtype):
    """In every dtype, a row's logits do not depend on the other rows of the batch
    (forks sharing the prompt, padding beside it, other chunkings) beyond the
    dtype's rounding: none in fp32; in bf16 a wider batch meets other kernel
    blockings, whose roundings differ within bf16's precision over 30 layers."""
    lm = lms[dtype]
    prompt, tail = ids[:-8], ids[-8:]
    alone, _, _ = lm.prefill(prompt)
    one = _feed_plan(lm, alone, tail, [[3, 5]], len(prompt))[0]
    many, _, _ = lm.prefill(prompt)
    many.select(torch.tensor([0, 0, 0, 0]))
    rows = _feed_plan(lm, many, tail, [[3, 5], [8, 0], [1, 7], [3, 5]], len(prompt))
    tol = 1e-3 if dtype == "float32" else 0.6
    for r, got in enumerate(rows):
        assert (got - one).abs().max() < tol, r
    assert torch.equal(rows[0], rows[3])


@pytest.mark.parametrize("runner", ["lean", "transformers"])
def test_rows_left_out_of_a_step_are_untouched(hf, ids, runner):
    """Feeding only some rows (``which``; the decoder leaves out rows stopped at a
    step boundary) gives them the logits a step over every row gives, packed where
    a mask asks for every position; the rows left out read on as if they had been
    fed padding."""
    model, _ = hf
    prompt, tail = ids[:-6], ids[-6:]

    def make():
        r = (LeanRunner(LeanLM(model, "float32"), prompt) if runner == "lean"
             else TransformersRunner(model, prompt, want_hidden=True))
        r.select(torch.tensor([0, 0, 0]))
        return r

    x = torch.tensor([tail[:3], tail[:3], tail[:3]])
    valid = torch.tensor([[True] * 3, [False] * 3, [False, True, True]])
    x[2, 0] = 0
    pos = torch.arange(len(prompt), len(prompt) + 3).repeat(3, 1)
    every, part = make(), make()
    want, want_h = every.feed(x, valid, pos, keep=0)
    which = torch.tensor([0, 2])
    got, got_h = part.feed(x[which], valid[which], pos[which], keep=valid[which], which=which)
    assert got.shape[0] == 5 and torch.allclose(got, want[which][valid[which]], atol=1e-4)
    assert torch.allclose(got_h, want_h[which], atol=1e-4)
    # the next step over every row: the row left out reads as if it had been fed padding
    nxt = torch.tensor([[tail[3]]] * 3)
    after = torch.full((3, 1), len(prompt) + 3)
    a, _ = every.feed(nxt, torch.ones(3, 1, dtype=torch.bool), after)
    b, _ = part.feed(nxt, torch.ones(3, 1, dtype=torch.bool), after)
    assert torch.allclose(a, b, atol=1e-4)


def test_continuations_are_fed_in_passes_that_cost_least():
    """``buckets``: every continuation with a token to feed is in one pass, none
    twice; lengths far apart go to separate passes, close ones share one."""
    lengths = [1, 1, 2, 0, 12, 11, 2, 1]
    groups = buckets(lengths)
    flat = sorted(i for g in groups for i in g)
    assert flat == [i for i, n in enumerate(lengths) if n]
    assert sorted(map(sorted, groups)) == [[0, 1, 2, 6, 7], [4, 5]]
    assert buckets([3, 3, 4]) == [[0, 1, 2]]  # one slot of padding costs less than a pass
    assert buckets([0, 0]) == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_forked_rows_decode_the_tokens_of_unforked_decoding(hf, lms, dtype):
    """Greedy: four forks of the prompt, decoded side by side, each write what one
    row decoded alone writes."""
    model, tok = hf
    case = load_cases("simple_python", 3)[2]
    q = prepare(tok, case.messages, case.tools)
    policy = engine.Policy(model, tok, "smollm2", dtype, lms[dtype])

    def decoder():
        return q.decoder(policy, temperature=0.0, max_new_tokens=96)

    alone = decoder().run(lambda s, ev: False)[0]
    dec = decoder()
    dec.select([0, 0, 0, 0])
    rows = dec.run(lambda s, ev: False)
    assert alone.done
    for r in rows:
        assert r.tokens == alone.tokens and r.state.text == alone.state.text


def test_int4_packs_only_what_it_reproduces(hf, lms):
    lm = lms["int4"]
    # SmolLM2's GGUF stores every linear layer as Q4_1: all of them repack exactly
    assert lm.packed_layers == lm.linear_layers == 7 * hf[0].config.num_hidden_layers
    torch.manual_seed(0)
    plain = torch.nn.Linear(64, 16, bias=False)  # continuous weights: 4 bits would lose them
    assert Linear(plain, "int4").packed is None
    with torch.no_grad():  # 16 levels per group of 32, both ends used (as Q4_1 does): kept in 4 bits
        codes = torch.randint(0, 16, (16, 64)).float()
        codes[:, 0::32], codes[:, 1::32] = 0, 15
        plain.weight.copy_(codes * 0.01 - 0.05)
    packed = Linear(plain, "int4")
    x = torch.randn(3, 64)
    assert packed.packed is not None
    narrow = torch.nn.Linear(64, 8, bias=False)  # the same kind of weights, 8 outputs: the kernel
    with torch.no_grad():                       # tiles 16, so they stay dense
        narrow.weight.copy_(plain.weight[:8])
    assert Linear(narrow, "int4").packed is None
    assert torch.allclose(packed(x), plain(x).detach(), atol=0.05)


def test_dtype_option_resolves_and_refuses(hf, monkeypatch):
    auto = resolve_dtype("auto")
    assert auto == ("int4" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "float32")
    for d in DTYPES:
        assert resolve_dtype(d) == d
    monkeypatch.setenv("TOOLPRM_DTYPE", "bfloat16")
    assert resolve_dtype(None) == "bfloat16"
    with pytest.raises(ToolprmError, match="dtype must be one of auto, float32, bfloat16, int4"):
        resolve_dtype("fp8")
    model, tok = hf
    for d in DTYPES:
        p = make_policy(model, tok, dtype=d)
        assert p.dtype == d and isinstance(p.runtime, LeanLM) and p.runtime.dtype == d
    # without the lean runtime only fp32 exists: another dtype is refused, not ignored
    assert make_policy(model, tok, dtype="float32", lean=False).runtime is model
    with pytest.raises(ToolprmError, match="needs the lean runtime"):
        make_policy(model, tok, dtype="int4", lean=False)
    assert supports(model) is None
    from transformers import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    assert "not Llama or Qwen2" in supports(gpt2)


def test_generate_takes_a_dtype(monkeypatch):
    tools = [{"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    r = engine.generate("Weather in Paris?", tools, strategy="greedy", dtype="int4", max_new_tokens=48)
    assert r.calls and r.calls[0]["name"] == "get_weather"
    assert get_policy(dtype="int4").runtime.dtype == "int4"
    with pytest.raises(ToolprmError, match="dtype must be one of"):
        engine.generate("Weather in Paris?", tools, strategy="greedy", dtype="half")


def test_bench_records_the_dtype_and_refuses_to_mix(tmp_path):
    cases = load_cases("live_simple", 1)
    spec = harness.StrategySpec("greedy")
    config = RunConfig(dtype="int4", max_new_tokens=64)
    harness.run_bench(cases, [spec], tmp_path, config, lambda: harness.ModelRunner(config), progress=False)
    assert json.loads((tmp_path / "run.json").read_text())["config"]["dtype"] == "int4"
    with pytest.raises(ToolprmError, match="dtype: 'int4' there, 'float32' now"):
        harness.run_bench(cases, [spec], tmp_path, RunConfig(dtype="float32", max_new_tokens=64),
                          lambda: None, progress=False)


def test_cli_refuses_an_unknown_dtype():
    r = subprocess.run([sys.executable, "-m", "toolprm.engine.cli", "bench", "bfcl", "--dtype", "fp8"],
                       capture_output=True, text=True, env={**os.environ, "TOOLPRM_THREADS": "1"})
    assert r.returncode == 2 and "invalid choice: 'fp8'" in r.stderr


def test_a_prompt_that_begins_like_the_last_reuses_its_keys(hf, lms, ids):
    """The second prompt shares the first's beginning: the whole chunks they share
    are taken from the first, and its logits and cache are, to the bit, those of a
    fresh prefill (so an answer does not depend on the request before it)."""
    from toolprm.engine.lean import chunk_starts

    def whole(k):  # the prompt's chunks that lie within its first k tokens
        return max(b for b in chunk_starts(len(ids)) + [len(ids)] if b <= k)
    for dtype in ("float32", "int4"):
        lm = lms[dtype]
        other = ids[:-20] + [ids[-1]] * 5
        lm.forget()
        lm.prefill(other)
        cache, logits, _ = lm.prefill(ids)
        assert lm.reused_tokens == whole(len(ids) - 20) > 0
        lm.forget()
        fresh, ref, _ = lm.prefill(ids)
        assert lm.reused_tokens == 0
        assert torch.equal(logits, ref)
        assert all(torch.equal(a, b) for a, b in zip(cache.prefix_k + cache.prefix_v,
                                                     fresh.prefix_k + fresh.prefix_v))
        _, again, _ = lm.prefill(ids)  # the same prompt again
        assert lm.reused_tokens == whole(len(ids) - 1)
        assert torch.equal(again, ref)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_random_llama_and_qwen2_match_transformers(arch):
    """The architectures ``supports`` admits, randomly initialised (Qwen2's q/k/v
    biases and rope base included): the lean forward gives transformers' logits."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    kw = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    model = (LlamaForCausalLM(LlamaConfig(**kw)) if arch == "llama"
             else Qwen2ForCausalLM(Qwen2Config(**kw, rope_theta=1e6, tie_word_embeddings=True))).eval()
    if arch == "qwen2":
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    assert supports(model) is None
    tokens = torch.randint(0, 300, (90,)).tolist()
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([tokens])).logits[0]
    lm = LeanLM(model, "float32")
    cache, logits, _ = lm.prefill(tokens[:80], keep=0)
    assert torch.allclose(logits[0], ref[:80], atol=1e-4)
    cache.select(torch.tensor([0, 0]))
    for got in _feed_plan(lm, cache, tokens[80:], [[4, 6], [10, 0]], 80):
        assert torch.allclose(got, ref[80:], atol=1e-4)
