"""The paired bootstrap over test examples: how sure is a difference between two arms of models?

An arm is one or more models (seeds) scored on the same test set. Each draw resamples the test indices once
and scores every member of both arms on that one resample (paired: the test set's luck cancels out of the
difference); an arm's statistic is its members' scores averaged; the CI is the percentile interval of the
resampled differences. scipy.stats.bootstrap draws the resamples and takes the percentiles; what it resamples
is the index vector, so the statistic sees the indices and can score any number of members and tasks on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from trainer.metrics import f1_per_class

DRAWS = 1000
CONFIDENCE = 0.95

# score(gold, pred, k, idx) → (draws, m): m statistics of one member on each resample `idx` (draws, n).
Score = Callable[[np.ndarray, np.ndarray, Any, np.ndarray], np.ndarray]


def class_scores(gold: np.ndarray, pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """(draws, k + 1): per-class F1 and macro-F1 (last column) of one task on each resample."""
    f1, macro = f1_per_class(gold[idx], pred[idx], k)
    return np.concatenate([f1, macro[:, None]], axis=1)


def seed_mean_scores(
    gold: np.ndarray, preds: Sequence[np.ndarray], k: Any, idx: np.ndarray | None, score: Score = class_scores
) -> np.ndarray:
    """(draws, m): `score` averaged over an arm's members (seeds) per resample; idx None: the test set as is
    (one row)."""
    rows = np.arange(len(gold))[None, :] if idx is None else idx
    mean: np.ndarray = np.mean([score(gold, pred, k, rows) for pred in preds], axis=0)
    return mean


def paired_bootstrap(
    gold: np.ndarray,
    arm: Sequence[np.ndarray],
    base: Sequence[np.ndarray],
    k: Any,
    draws: int = DRAWS,
    seed: int = 0,
    *,
    confidence: float = CONFIDENCE,
    score: Score = class_scores,
) -> dict[str, np.ndarray]:
    """Delta (arm − base) of `score`, its percentile CI, and the resampled deltas (draws, m).

    `gold` and every member's predictions are indexed by test example along their first axis (a multi-task
    score takes (n, tasks) arrays); `k` is passed through to `score` (the class count, or one per task).
    """
    n = len(gold)
    delta = seed_mean_scores(gold, arm, k, None, score)[0] - seed_mean_scores(gold, base, k, None, score)[0]
    if n < 2:  # every resample is the test set itself (scipy wants two observations)
        return {"delta": delta, "low": delta, "high": delta, "samples": np.repeat(delta[None], draws, 0)}

    def resampled_delta(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy hands over the resampled indices (draws, n) and wants the statistics with draws last
        delta: np.ndarray = seed_mean_scores(gold, arm, k, idx, score) - seed_mean_scores(gold, base, k, idx, score)
        return delta.T

    result = stats.bootstrap(
        (np.arange(n),),
        resampled_delta,
        n_resamples=draws,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return {
        "delta": delta,
        "low": np.asarray(result.confidence_interval.low),
        "high": np.asarray(result.confidence_interval.high),
        "samples": result.bootstrap_distribution.T,
    }
