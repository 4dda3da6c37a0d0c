"""The classical ensemble member: TF-IDF (word and character n-grams, trainer.baselines) with class-balanced
logistic regression, one per task, trained on the same training view as a transformer run.

It trains in seconds to a minute on a CPU and is strong exactly where a briefly trained small transformer is
weak (rare classes with telling words), so an ensemble weights it by val (trainer/ensemble.py), never by
assumption. The regularisation C is chosen per task on val macro-F1 from a small grid; the decision rule is
fitted on val as for a transformer run. Saved as a run directory like a transformer's: `model/` (the fitted
pipelines with joblib, `model.json`, `decision.json`), `config.yaml`, `metrics.json`, the prediction dumps.
The joblib file is a pickle: it is only ever loaded from the run directory this code wrote.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import ConfigDict, Field

from trainer.config import ConfigModel, Name
from trainer.decision import decide, fit_rules
from trainer.examples import IGNORE, SplitData, TaskSpec
from trainer.metrics import evaluate_probs, prediction_dump

C_GRID = (0.5, 2.0, 8.0)


class ClassicalConfig(ConfigModel):
    """What a TF-IDF member run trains on and how (the data keys mirror TrainConfig's)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: Literal["tfidf_logreg"] = "tfidf_logreg"
    tasks: list[Name] | None = Field(default=None, min_length=1)
    variants: Literal["approved", "none"] = "approved"
    exclude_methods: list[Name] = Field(default_factory=list)
    c_grid: list[float] = Field(default_factory=lambda: list(C_GRID), min_length=1, max_length=8)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    decision: Literal["prior", "none"] = "prior"


@dataclass
class ClassicalResult:
    models: dict[str, Any]  # task → fitted pipeline
    tasks: list[TaskSpec]
    config: ClassicalConfig
    chosen_c: dict[str, float]
    metrics: dict[str, Any]
    predictions: dict[str, dict[str, Any]]
    snapshot: list[list[Any]]
    decision: dict[str, Any] | None
    seconds: float


def _proba(model: Any, texts: list[str], k: int) -> np.ndarray:
    out = np.zeros((len(texts), k))
    if texts:
        out[:, model.classes_] = model.predict_proba(texts)
    return out


def train_classical(config: ClassicalConfig, data: SplitData, progress: Any = None) -> ClassicalResult:
    """Fit one pipeline per task (C chosen on val macro-F1), fit the decision rule on val, score test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import Pipeline

    from trainer.baselines import tfidf_features
    from trainer.data import label_matrix

    started = time.monotonic()
    emit = progress or (lambda _e: None)
    train_texts = [e.text for e in data.train]
    val_texts, test_texts = [e.text for e in data.val], [e.text for e in data.test]
    train_gold = label_matrix(data.train, data.tasks).numpy()
    val_gold = label_matrix(data.val, data.tasks).numpy()
    test_gold = label_matrix(data.test, data.tasks).numpy()
    features = tfidf_features().fit(train_texts)  # one vocabulary for every task: the same training view
    x_train, x_val = features.transform(train_texts), features.transform(val_texts)
    models: dict[str, Any] = {}
    chosen: dict[str, float] = {}
    for j, task in enumerate(data.tasks):
        keep, val_keep = train_gold[:, j] != IGNORE, val_gold[:, j] != IGNORE
        if len(set(train_gold[keep, j].tolist())) < 2:
            raise ValueError(f"task {task.name!r} has fewer than two classes in the training view")
        best: tuple[float, float, Any] | None = None
        for c in sorted(config.c_grid):
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=config.seed)
            clf.fit(x_train[keep], train_gold[keep, j])
            score = (
                f1_score(val_gold[val_keep, j], clf.predict(x_val[val_keep]), average="macro")
                if val_keep.any()
                else 0.0
            )
            if best is None or score > best[0] + 1e-12:
                best = (float(score), c, clf)
            emit({"event": "classical", "task": task.name, "C": c, "val_macro_f1": float(score)})
        assert best is not None
        chosen[task.name] = best[1]
        models[task.name] = Pipeline([("tfidf", features), ("logreg", best[2])])
    val_probs = {t.name: _proba(models[t.name], val_texts, len(t.labels)) for t in data.tasks}
    test_probs = {t.name: _proba(models[t.name], test_texts, len(t.labels)) for t in data.tasks}
    rules = fit_rules(val_probs, val_gold, data.tasks, config.decision)
    val_labels, test_labels = decide(val_probs, rules), decide(test_probs, rules)
    metrics: dict[str, Any] = {
        "val": evaluate_probs(val_probs, val_gold, data.tasks),
        "test": evaluate_probs(test_probs, test_gold, data.tasks, test_labels) if test_texts else None,
        "test_argmax": evaluate_probs(test_probs, test_gold, data.tasks) if test_texts and rules else None,
        "decision": rules,
        "chosen_c": chosen,
        "train_samples": len(train_texts),
    }

    seconds = time.monotonic() - started
    metrics["seconds"] = round(seconds, 2)
    return ClassicalResult(
        models=models,
        tasks=data.tasks,
        config=config,
        chosen_c=chosen,
        metrics=metrics,
        predictions={
            "val": prediction_dump([e.sample_id for e in data.val], data.tasks, val_gold, val_probs, val_labels),
            "test": prediction_dump([e.sample_id for e in data.test], data.tasks, test_gold, test_probs, test_labels),
        },
        snapshot=data.snapshot(),
        decision=rules,
        seconds=seconds,
    )


def save_classical(result: ClassicalResult, out_dir: Path) -> Path:
    import joblib

    out_dir = Path(out_dir)
    model_dir = out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(result.models, model_dir / "model.joblib")
    meta = {
        "kind": "tfidf",
        "tasks": [{"name": t.name, "labels": t.labels} for t in result.tasks],
        "chosen_c": result.chosen_c,
    }
    (model_dir / "model.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (model_dir / "decision.json").write_text(json.dumps(result.decision), encoding="utf-8")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(result.config.model_dump(), sort_keys=False), encoding="utf-8")
    (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2), encoding="utf-8")
    for split, dump in result.predictions.items():
        (out_dir / f"predictions_{split}.json").write_text(json.dumps(dump), encoding="utf-8")
    (out_dir / "snapshot.json").write_text(json.dumps(result.snapshot), encoding="utf-8")
    return out_dir


class ClassicalPredictor:
    """A saved TF-IDF member loaded for inference (the interface of trainer.predict.RunPredictor)."""

    def __init__(self, model_dir: Path) -> None:
        import joblib

        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        self.tasks = [TaskSpec(t["name"], list(t["labels"])) for t in meta["tasks"]]
        self.models = joblib.load(model_dir / "model.joblib")
        decision = model_dir / "decision.json"
        self.decision = json.loads(decision.read_text(encoding="utf-8")) if decision.is_file() else None

    def predict_proba(self, texts: list[str], batch_size: int = 64, on_batch: Any = None) -> dict[str, np.ndarray]:
        out = {t.name: _proba(self.models[t.name], texts, len(t.labels)) for t in self.tasks}
        if on_batch:
            on_batch(len(texts), len(texts))
        return out

    def decide(self, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return decide(probs, self.decision)
