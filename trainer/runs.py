"""Training runs end to end, shared by the `train` job and the in-process CLI; and ensembles of runs.

Every database step is a short transaction of its own: read the data, then train or predict with no
transaction open, then write the outcome (and, for a job, its completion) in one final transaction.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from augloop.settings import get_settings
from db import training_runs as db_runs
from db.errors import ValidationFailed
from db.models import Dataset, JobStatus, TrainingRun, utcnow
from db.session import readonly_engine, session_scope
from trainer.config import TrainConfig
from trainer.data import TaskSpec, load_split_data
from trainer.ensemble import build_ensemble
from trainer.metrics import summary_line
from trainer.predict import (
    predict_texts,
    probs_to_json,
    read_predictions,
)
from trainer.train import save_artifacts, train_model

ProgressFn = Callable[[dict[str, Any]], None]
FinishFn = Callable[[Session, dict[str, Any]], None]


def runs_root() -> Path:
    return get_settings().data_dir.resolve() / "runs"


def default_config(overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The recipe's defaults, with the deployment's default encoder (AUGLOOP_TRAINER_DEFAULT_ENCODER)."""
    settings = get_settings()
    base: dict[str, Any] = (
        {"encoder": settings.trainer_default_encoder} if settings.trainer_default_encoder else {}
    )
    return TrainConfig.from_dict({**base, **(overrides or {})})


def check_config_against(dataset: Dataset, config: TrainConfig) -> None:
    """Task and label names in the config must exist in the dataset (caught at request time, not in a job)."""
    known = dataset.task_names()
    for key, names in (
        ("tasks", config.tasks or []),
        ("task_weights", list(config.task_weights)),
        ("class_label_smoothing", list(config.class_label_smoothing)),
    ):
        unknown = [t for t in names if t not in known]
        if unknown:
            raise ValidationFailed(
                f"dataset {dataset.name!r} has tasks {known}; unknown: {unknown}", field=f"config.{key}"
            )
    for task, per_label in config.class_label_smoothing.items():
        bad = [label for label in per_label if label not in dataset.labels_of(task)]
        if bad:
            raise ValidationFailed(
                f"task {task!r} has labels {dataset.labels_of(task)}; unknown: {bad}",
                field="config.class_label_smoothing",
            )


def create_training_runs(
    session: Session,
    dataset: Dataset,
    config: TrainConfig,
    seeds: list[int],
    *,
    name: str = "",
    created_by: int | None = None,
) -> list[TrainingRun]:
    """One run per seed (a seed ensemble when several), each with the full config it will train with."""
    check_config_against(dataset, config)
    if len(set(seeds)) != len(seeds):
        raise ValidationFailed("seeds must be distinct", field="seeds")
    runs = []
    for seed in seeds or [config.seed]:
        run_config = config.with_overrides({"seed": seed}).to_dict()
        label = name or "/".join(Path(config.encoder).parts[-2:])  # hub "org/name", or a directory's last two
        runs.append(
            db_runs.create_run(
                session, dataset, run_config, name=f"{label} seed {seed}", created_by=created_by
            )
        )
    return runs


# Training ------------------------------------------------------------------------------------------


def execute_run(
    engine: Engine,
    run_id: int,
    *,
    job_id: int | None = None,
    progress: ProgressFn | None = None,
    finish: FinishFn | None = None,
) -> dict[str, Any]:
    """Train run `run_id`, save its artifacts, score the dataset's pending variants, record everything.

    Raises on failure; the caller records the outcome with `record_end` (it knows cancel from failure).
    """
    emit = progress or (lambda _e: None)
    with session_scope(engine) as session:
        run = db_runs.mark_running(session, run_id, job_id)
        dataset = session.get_one(Dataset, run.dataset_id)
        config = TrainConfig.from_dict(run.config)
        data = load_split_data(
            session,
            dataset,
            config.tasks,
            variants=config.variants,
            exclude_methods=config.exclude_methods,
        )
        dataset_id = dataset.id
    if config.num_threads is None and get_settings().trainer_threads > 0:
        config = config.with_overrides({"num_threads": get_settings().trainer_threads})

    def on_event(event: dict[str, Any]) -> None:
        emit(event)  # first: a job that lost its lease or was cancelled raises here and records nothing more
        if event["event"] == "epoch":
            entry = {k: v for k, v in event.items() if k != "event"}
            with session_scope(engine) as s:
                db_runs.record_epoch(s, run_id, entry)

    result = train_model(config, data, progress=on_event)
    out_dir = runs_root() / str(run_id)
    if out_dir.exists():  # a previous attempt of this run
        shutil.rmtree(out_dir)
    save_artifacts(result, out_dir)

    emit({"event": "phase", "phase": "scoring pending variants"})
    with session_scope(readonly_engine(engine)) as session:
        variants = db_runs.pending_variants(session, dataset_id)
    scores = consistency_scores(result.model, result.tokenizer, data.tasks, variants, config.max_length, emit)
    summary = {
        "run_id": run_id,
        "artifact_dir": str(out_dir),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curve),
        "train_samples": len(result.snapshot),
        "val_macro_f1": result.metrics["val"]["overall_macro_f1"],
        "test_macro_f1": (result.metrics["test"] or {}).get("overall_macro_f1"),
        "variants_scored": 0,
    }
    with session_scope(engine) as session:
        db_runs.finish_run(
            session,
            run_id,
            metrics=result.metrics,
            curve=result.curve,
            snapshot=result.snapshot,
            artifact_dir=str(out_dir),
        )
        summary["variants_scored"] = db_runs.apply_consistency_scores(session, run_id, scores)
        if finish:
            finish(session, summary)
    emit(
        {
            "event": "finished",
            **summary,
            "summary": summary_line(result.metrics["test"] or result.metrics["val"]),
        }
    )
    return summary


def record_end(engine: Engine, run_id: int, status: str, error: str | None = None) -> None:
    with session_scope(engine) as session:
        db_runs.end_run(session, run_id, status, error[-4000:] if error else None)


def consistency_scores(
    model: Any,
    tokenizer: Any,
    tasks: list[TaskSpec],
    variants: list[db_runs.PendingVariant],
    max_length: int,
    emit: ProgressFn,
) -> list[db_runs.ConsistencyScore]:
    """Per variant: p(intended label) per task; consistency = minimum over tasks; flag = another argmax."""
    if not variants:
        return []
    probs = predict_texts(
        model,
        tokenizer,
        [v.text for v in variants],
        max_length=max_length,
        on_batch=lambda d, t: emit({"event": "scoring", "done": d, "total": t}),
    )
    as_json = probs_to_json(tasks, probs)
    out = []
    for i, variant in enumerate(variants):
        intended, flag = [], False
        for t in tasks:
            label = variant.labels.get(t.name)
            if label is None or label not in t.labels:
                continue
            k = t.labels.index(label)
            intended.append(float(probs[t.name][i, k]))
            flag = flag or int(np.argmax(probs[t.name][i])) != k
        out.append(
            db_runs.ConsistencyScore(
                variant.id,
                variant.version,
                min(intended) if intended else None,
                flag if intended else None,
                as_json[i],
            )
        )
    return out


# Ensembles -----------------------------------------------------------------------------------------


def create_ensemble(
    session: Session,
    run_ids: list[int],
    *,
    weighted: bool = True,
    temperature: bool = True,
    name: str = "",
    created_by: int | None = None,
) -> TrainingRun:
    """Combine finished runs of one dataset from their saved val/test probabilities (no model is loaded)."""
    ids = list(dict.fromkeys(run_ids))
    if len(ids) < 2:
        raise ValidationFailed("give at least two distinct run ids", field="run_ids")
    runs = [db_runs.get_run(session, i, field="run_ids") for i in ids]
    for run in runs:
        if run.kind != "single":
            raise ValidationFailed(f"run {run.id} is an ensemble; combine single runs", field="run_ids")
        if run.status != JobStatus.succeeded or not run.artifact_dir:
            raise ValidationFailed(
                f"run {run.id} is {run.status}; only finished runs combine", field="run_ids"
            )
    if len({r.dataset_id for r in runs}) != 1:
        raise ValidationFailed("ensemble members must be runs of the same dataset", field="run_ids")
    members = []
    for run in runs:
        root = Path(run.artifact_dir or "")
        try:
            preds = {s: read_predictions(root / f"predictions_{s}.json") for s in ("val", "test")}
        except FileNotFoundError:
            raise ValidationFailed(
                f"the saved predictions of run {run.id} are missing", field="run_ids"
            ) from None
        members.append(
            {
                "id": run.id,
                "val_macro_f1": (run.metrics.get("val") or {}).get("overall_macro_f1"),
                "predictions": preds,
            }
        )
    combined = build_ensemble(members, weighted=weighted, temperature=temperature)
    dataset = session.get_one(Dataset, runs[0].dataset_id)
    config = {
        "members": ids,
        "weighted": weighted,
        "temperature": temperature,
        "weights": combined["weights"],
        "temperatures": combined["temperatures"],
        "encoders": {str(r.id): r.config.get("encoder") for r in runs},
    }
    run = db_runs.create_run(
        session,
        dataset,
        config,
        name=name or f"ensemble of {', '.join(map(str, ids))}",
        kind="ensemble",
        member_ids=ids,
        created_by=created_by,
        status=JobStatus.succeeded,
    )
    out_dir = runs_root() / str(run.id)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, dump in combined["predictions"].items():
        (out_dir / f"predictions_{split}.json").write_text(json.dumps(dump), encoding="utf-8")
    member_scores = {
        str(r.id): {
            "val": (r.metrics.get("val") or {}).get("overall_macro_f1"),
            "test": (r.metrics.get("test") or {}).get("overall_macro_f1"),
        }
        for r in runs
    }
    run.metrics = {
        "val": combined["val"],
        "test": combined["test"],
        "calibration": combined["calibration"],
        "members": member_scores,
    }
    (out_dir / "metrics.json").write_text(
        json.dumps({**run.metrics, "config": config}, indent=2), encoding="utf-8"
    )
    run.artifact_dir = str(out_dir)
    run.finished_at = utcnow()
    session.flush()
    return run
