"""Statistics over per-example scores: confidence intervals and paired significance tests.

Adapter and base model answer the same benchmark items, so comparisons are
paired: McNemar's exact test for 0/1 scores, a paired bootstrap otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_ci(scores, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        raise ValueError("no scores")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (BOOTSTRAP_SAMPLES, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return Interval(float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def mcnemar_exact(a, b) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (binomial test on the discordant pairs)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired scores must have the same length")
    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap_p(a, b, seed: int = 0) -> float:
    """Two-sided p-value that mean(a) - mean(b) is zero, by resampling items with replacement."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired scores must have the same length")
    diff = a - b
    observed = diff.mean()
    rng = np.random.default_rng(seed)
    resampled = diff[rng.integers(0, diff.size, (BOOTSTRAP_SAMPLES, diff.size))].mean(axis=1)
    # Centre the bootstrap distribution on zero (the null) and count results as extreme as observed.
    extreme = np.abs(resampled - observed) >= abs(observed) - 1e-12
    return float((extreme.sum() + 1) / (BOOTSTRAP_SAMPLES + 1))


def paired_p_value(a, b) -> float:
    """McNemar for 0/1 scores, paired bootstrap for anything else."""
    values = np.concatenate([np.asarray(a, dtype=float), np.asarray(b, dtype=float)])
    binary = np.all((values == 0) | (values == 1))
    return mcnemar_exact(a, b) if binary else paired_bootstrap_p(a, b)
