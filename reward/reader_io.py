"""Checks shared by the text readers' checkpoints (``reward.encoder``, ``reward.generative``):
the manifest's format and base, and a tensor file whose names must fit the model."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from toolprm.errors import ToolprmError


def check_manifest(path: Path, manifest: dict, fmt: str, base_sha: str) -> None:
    if manifest.get("format") != fmt:
        raise ToolprmError(f"{path}: checkpoint format {manifest.get('format')!r}, this version reads {fmt!r}")
    if manifest.get("base", {}).get("sha256") != base_sha:
        raise ToolprmError(f"{path}: trained on another base model (sha256 "
                           f"{manifest.get('base', {}).get('sha256')!r}), expected {base_sha}")


def read_tensors(file: Path, want: set[str], shape: str) -> dict[str, torch.Tensor]:
    """The tensors of ``file``, refused unless their names are exactly ``want``
    (``shape`` says what model those names describe)."""
    tensors = load_file(str(file))
    if set(tensors) != want:
        raise ToolprmError(f"{file.parent}: the checkpoint's tensors do not match {shape} (missing "
                           f"{sorted(want - set(tensors))[:3]}, unexpected {sorted(set(tensors) - want)[:3]})")
    return tensors
