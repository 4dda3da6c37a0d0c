"""Per-task macro-F1, per-class precision/recall/F1, confusion matrices; overall = mean of task macro-F1s.

Macro-F1 averages over the classes that occur in the gold labels or the predictions (scikit-learn's default):
a class absent from a small evaluation split and never predicted says nothing about the model.
Samples without a label for a task (IGNORE) are left out of that task's metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from trainer.examples import IGNORE, TaskSpec


def task_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    keep = y_true != IGNORE
    y_true, y_pred = np.asarray(y_true)[keep], np.asarray(y_pred)[keep]
    k = len(labels)
    if y_true.size == 0:
        return {
            "n": 0,
            "macro_f1": None,
            "accuracy": None,
            "per_class": {},
            "confusion": {"labels": labels, "matrix": [[0] * k for _ in range(k)]},
        }
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    macro = float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), zero_division=0)
    per_class = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    return {
        "n": int(y_true.size),
        "macro_f1": macro,
        "accuracy": float((y_true == y_pred).mean()),
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
    }


def evaluate_probs(probs: dict[str, np.ndarray], gold: np.ndarray, tasks: list[TaskSpec]) -> dict[str, Any]:
    """`probs[task]` is (N, K); `gold` is (N, tasks) with IGNORE for missing labels."""
    out: dict[str, Any] = {}
    for j, task in enumerate(tasks):
        out[task.name] = task_metrics(gold[:, j], probs[task.name].argmax(axis=1), task.labels)
    scored = [m["macro_f1"] for m in out.values() if m["macro_f1"] is not None]
    return {"overall_macro_f1": float(np.mean(scored)) if scored else None, "tasks": out}


def summary_line(metrics: dict[str, Any]) -> str:
    parts = [
        f"{name} {m['macro_f1']:.3f}" for name, m in metrics["tasks"].items() if m["macro_f1"] is not None
    ]
    overall = metrics.get("overall_macro_f1")
    return f"macro-F1 {overall:.3f} ({', '.join(parts)})" if overall is not None else "no labelled samples"
