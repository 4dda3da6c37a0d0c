"""The classical baseline every result is held against: TF-IDF (word and character n-grams) + class-balanced
logistic regression, one model per task. Seconds on a CPU; a transformer has to beat it to earn its keep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from trainer.errors import TrainerError
from trainer.examples import IGNORE, TaskSpec
from trainer.metrics import evaluate_probs

MIN_DF = 2  # a term counts when it occurs in this many training texts (fewer where no term would: fit_tfidf_features)


def word_tfidf(min_df: int = MIN_DF) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True, lowercase=True)


def char_tfidf(min_df: int = MIN_DF) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), min_df=min_df, sublinear_tf=True, lowercase=True, max_features=200_000
    )


TFIDF_PARTS: dict[str, Callable[[int], TfidfVectorizer]] = {"word": word_tfidf, "char": char_tfidf}


def tfidf_features() -> FeatureUnion:
    """Word (1–2) and character (2–5) n-gram TF-IDF, unfitted."""
    return FeatureUnion([(name, make(MIN_DF)) for name, make in TFIDF_PARTS.items()])


def fit_tfidf_features(texts: list[str], what: str = "the training view") -> FeatureUnion:
    """tfidf_features fitted on `texts`. Where no term of a part occurs in MIN_DF texts (a handful of short texts,
    each with its own words: scikit-learn's "After pruning, no terms remain") that part keeps every term it
    finds; a part that finds none (texts of one-letter words have no word token) is left out. TrainerError,
    naming `what`, when no part finds a term: nothing to learn from."""
    parts = [(name, fitted) for name, make in TFIDF_PARTS.items() if (fitted := _fitted(make, texts)) is not None]
    if not parts:
        raise TrainerError(f"{what}: the TF-IDF member finds no word or character n-gram to learn from")
    return FeatureUnion(parts)


def _fitted(make: Callable[[int], TfidfVectorizer], texts: list[str]) -> TfidfVectorizer | None:
    for min_df in dict.fromkeys((MIN_DF, 1)):
        try:
            return make(min_df).fit(texts)
        except ValueError:  # no term left at this min_df ("no terms remain", "empty vocabulary", one text)
            continue
    return None


def tfidf_logreg_probs(
    train_texts: list[str],
    train_gold: np.ndarray,
    eval_texts: list[str],
    tasks: list[TaskSpec],
    C: float = 4.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-task class probabilities (N_eval × K) from a balanced logistic regression on TF-IDF features.

    `train_gold` is (N_train, tasks) with IGNORE where a sample lacks that task's label. TrainerError where a
    task has fewer than two classes among its labelled texts, or they hold no term."""
    probs: dict[str, np.ndarray] = {}
    for j, task in enumerate(tasks):
        keep = train_gold[:, j] != IGNORE
        texts = [t for t, k in zip(train_texts, keep, strict=True) if k]
        require_two_classes(task.name, train_gold[keep, j])
        features = fit_tfidf_features(texts, f"task {task.name!r}")
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=3000, random_state=seed)
        model = Pipeline([("tfidf", features), ("logreg", clf.fit(features.transform(texts), train_gold[keep, j]))])
        out = np.zeros((len(eval_texts), len(task.labels)))
        out[:, model.classes_] = model.predict_proba(eval_texts)
        probs[task.name] = out
    return probs


def require_two_classes(task: str, labels: np.ndarray) -> None:
    """A classifier needs texts of two classes: TrainerError (permanent: more data, not a retry, fixes it)."""
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        held = "no labelled text" if not present else f"only one class among its {len(labels)} labelled text(s)"
        raise TrainerError(f"task {task!r} has {held} in the training view: a classifier needs two classes")


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
