"""Feature matrices of stored PRM data: what the head reads at each step.

The same features the search computes for a candidate (``reward.prm``), here from
a data folder: the hidden states stored with the data (or a separate backbone's,
recomputed), the step features, and the text features from the stored query,
tools and events.
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from toolprm.engine.models import load_model
from toolprm.grammar import normalize_tools
from toolprm.reward.features import N_TEXT, ToolIndex, events_from_records, text_features
from toolprm.reward.prm import N_EXTRA, PRM, BackbonePRM, PRMHead, feature_matrix

from .data import load_queries


def backbone_hidden(data_dir: str | os.PathLike, records: list[dict], backbone: str,
                    progress: bool = True) -> np.ndarray:
    """Hidden states of a separate backbone at each step: (prompt in its chat format)
    + the partial output up to the step's end — what ``BackbonePRM`` reads."""
    model, tok = load_model(backbone)
    d = model.config.hidden_size
    dummy = BackbonePRM(PRM(PRMHead(d + N_EXTRA, "linear"), {}), model, tok)
    queries = load_queries(data_dir)
    out = np.zeros((len(records), d), dtype=np.float32)
    by_query: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_query.setdefault(r["query"], []).append(i)
    for key, idx in tqdm(by_query.items(), desc=f"hidden states ({backbone})", disable=not progress):
        q = queries[key]
        specs = [t.spec() for t in normalize_tools(q["tools"])]
        ids = dummy.prompt_ids(q["messages"], specs)
        for s in range(0, len(idx), 32):
            chunk = idx[s:s + 32]
            out[chunk] = dummy.hidden_states(ids, [records[i]["partial"] for i in chunk])
    return out


def text_matrix(data_dir: str | os.PathLike, records: list[dict]) -> np.ndarray:
    """reward.features.text_features of every step, from the stored query, tools and events."""
    queries = load_queries(data_dir)
    out = np.zeros((len(records), N_TEXT), dtype=np.float32)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r["query"], r["rollout"]), []).append(i)
    indexes: dict[str, ToolIndex] = {}
    for (key, _), idx in groups.items():
        if key not in queries:
            continue
        if key not in indexes:
            q = queries[key]
            indexes[key] = ToolIndex(q["messages"], [t.spec() for t in normalize_tools(q["tools"])])
        idx.sort(key=lambda i: records[i]["step"])
        events = events_from_records([records[i] for i in idx])
        for j, i in enumerate(idx):
            out[i] = text_features(indexes[key], events[: j + 1])
    return out


def features(records: list[dict], hidden: np.ndarray, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The PRM head's input rows: hidden state, step features and (with ``data_dir``)
    the text features of each step."""
    text = text_matrix(data_dir, records) if data_dir is not None else None
    return feature_matrix(hidden, [r["kind"] for r in records], [r["logprob"] for r in records],
                          [r["sampled"] for r in records], [r["call"] for r in records], text)
