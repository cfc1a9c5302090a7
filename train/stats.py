"""Uncertainty for accuracy claims: Wilson intervals and McNemar's exact paired test."""
from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``k / n`` ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` cases only A got right and ``c`` only
    B got right (a binomial test of b against b + c at 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(a: list[bool], b: list[bool]) -> dict:
    """A against B on the same cases: the discordant counts and McNemar's p."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must cover the same cases")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    return {"only_a": only_a, "only_b": only_b, "p": mcnemar_exact(only_a, only_b)}


def mean_of_groups_ci(groups: list[list[bool]], reps: int = 2000, seed: int = 0,
                      weights: list[float] | None = None) -> tuple[float, float]:
    """95% bootstrap interval of the mean of group accuracies (BFCL's mean over
    categories: unweighted, or with ``weights``, one per group, as BFCL's summary weighs
    each of its three Simple categories a third), resampling cases within each group
    (a stratified bootstrap)."""
    import random

    weights = [1.0] * len(groups) if weights is None else list(weights)
    if len(weights) != len(groups):
        raise ValueError(f"{len(weights)} weights for {len(groups)} groups")
    kept = [(g, w) for g, w in zip(groups, weights) if g]
    if not kept:
        return 0.0, 1.0
    total = sum(w for _, w in kept)
    rng = random.Random(seed)
    means = sorted(sum(w * sum(rng.choices(g, k=len(g))) / len(g) for g, w in kept) / total
                   for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]
