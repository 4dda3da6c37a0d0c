"""trainer.metrics.f1_per_class (macro-F1 for many resamples at once) and trainer.bootstrap.paired_bootstrap,
which the impact report (services/impact.py) and the quality study (bench/quality_stats.py) share."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from trainer.bootstrap import paired_bootstrap, seed_mean_scores
from trainer.metrics import f1_per_class


def test_vectorised_f1_equals_scikit_learn_row_by_row() -> None:
    rng = np.random.default_rng(7)
    k = 6
    gold = rng.integers(0, k, (40, 30))
    pred = rng.integers(0, k, (40, 30))
    gold[:10] = np.minimum(gold[:10], 2)  # some rows miss classes in gold, predictions or both
    pred[5:15] = np.minimum(pred[5:15], 3)
    f1, macro = f1_per_class(gold, pred, k)
    assert f1.shape == (40, k) and macro.shape == (40,)
    for r in range(40):
        assert macro[r] == pytest.approx(f1_score(gold[r], pred[r], average="macro"))
        expected = f1_score(gold[r], pred[r], labels=list(range(k)), average=None, zero_division=0)
        assert f1[r] == pytest.approx(expected)
    stacked = f1_per_class(gold.reshape(4, 10, 30), pred.reshape(4, 10, 30), k)[1]
    assert stacked.reshape(40) == pytest.approx(macro)  # any leading shape


def test_vectorised_f1_refuses_ids_outside_the_classes() -> None:
    with pytest.raises(ValueError, match="gold"):
        f1_per_class(np.array([0, -100, 1]), np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="pred"):
        f1_per_class(np.array([0, 1]), np.array([0, 2]), 2)


def _arms(n: int = 200, fixes: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    gold = rng.integers(0, 3, n)
    base = np.where(rng.random(n) < 0.7, gold, (gold + 1) % 3)
    better = base.copy()
    wrong = np.flatnonzero(base != gold)[:fixes]
    better[wrong] = gold[wrong]  # the same predictions but a few mistakes fixed
    return gold, better, base


def test_ci_contains_the_point_delta_and_is_reproducible() -> None:
    gold, better, base = _arms()
    boot = paired_bootstrap(gold, [better], [base], 3, draws=300, seed=5)
    point = seed_mean_scores(gold, [better], 3, None)[0] - seed_mean_scores(gold, [base], 3, None)[0]
    assert boot["delta"] == pytest.approx(point)
    assert np.all(boot["low"] <= point) and np.all(point <= boot["high"])
    assert boot["samples"].shape == (300, 4)  # 3 classes + macro
    again = paired_bootstrap(gold, [better], [base], 3, draws=300, seed=5)
    assert np.array_equal(again["samples"], boot["samples"])
    other = paired_bootstrap(gold, [better], [base], 3, draws=300, seed=6)
    assert not np.array_equal(other["samples"], boot["samples"])


def test_both_arms_are_scored_on_the_same_resample() -> None:
    # Fixing a mistake never lowers any class's F1 on a test set that holds it, so on paired resamples every
    # resampled delta is >= 0; resampling the arms independently would give negative deltas half the time.
    gold, better, base = _arms(fixes=2)
    boot = paired_bootstrap(gold, [better, better], [base, base], 3, draws=500)
    assert np.all(boot["samples"] >= -1e-12) and np.all(boot["low"] >= -1e-12)
    assert boot["high"][-1] > 0


def test_members_are_averaged_and_a_custom_score_is_used() -> None:
    gold, better, base = _arms()

    def accuracy(g: np.ndarray, p: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
        return (g[idx] == p[idx]).mean(axis=-1)[:, None]

    boot = paired_bootstrap(gold, [better, base], [base], 3, draws=100, score=accuracy)
    assert boot["delta"][0] == pytest.approx(((better == gold).mean() - (base == gold).mean()) / 2)


def test_a_single_test_example_gives_a_degenerate_interval() -> None:
    boot = paired_bootstrap(np.array([1]), [np.array([1])], [np.array([0])], 2, draws=50)
    assert boot["delta"][-1] == pytest.approx(1.0)  # macro over the classes present: 1 vs 0
    assert np.array_equal(boot["low"], boot["delta"]) and np.array_equal(boot["high"], boot["delta"])
