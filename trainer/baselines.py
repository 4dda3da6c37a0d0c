"""The classical baseline every result is held against: TF-IDF (word and character n-grams) + class-balanced
logistic regression, one model per task. Seconds on a CPU; a transformer has to beat it to earn its keep."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline

from trainer.examples import IGNORE, TaskSpec
from trainer.metrics import evaluate_probs


def tfidf_features() -> FeatureUnion:
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(2, 5),
                    min_df=2,
                    sublinear_tf=True,
                    lowercase=True,
                    max_features=200_000,
                ),
            ),
        ]
    )


def tfidf_logreg_probs(
    train_texts: list[str],
    train_gold: np.ndarray,
    eval_texts: list[str],
    tasks: list[TaskSpec],
    C: float = 4.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-task class probabilities (N_eval × K) from a balanced logistic regression on TF-IDF features.

    `train_gold` is (N_train, tasks) with IGNORE where a sample lacks that task's label."""
    probs: dict[str, np.ndarray] = {}
    for j, task in enumerate(tasks):
        keep = train_gold[:, j] != IGNORE
        texts = [t for t, k in zip(train_texts, keep, strict=True) if k]
        model = make_pipeline(
            tfidf_features(), LogisticRegression(C=C, class_weight="balanced", max_iter=3000, random_state=seed)
        )
        model.fit(texts, train_gold[keep, j])
        out = np.zeros((len(eval_texts), len(task.labels)))
        out[:, model.classes_] = model.predict_proba(eval_texts)
        probs[task.name] = out
    return probs


def tfidf_baseline(
    train_texts: list[str],
    train_gold: np.ndarray,
    eval_texts: list[str],
    eval_gold: np.ndarray,
    tasks: list[TaskSpec],
    **kwargs: Any,
) -> dict[str, Any]:
    """Metrics of the baseline on an evaluation split, in the trainer's metrics format."""
    return evaluate_probs(tfidf_logreg_probs(train_texts, train_gold, eval_texts, tasks, **kwargs), eval_gold, tasks)
