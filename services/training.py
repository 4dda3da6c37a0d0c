"""Training: configs checked against the dataset, runs queued (one per seed), followed, combined into
ensembles. Executing a run is services.run_execution; serving a model is services.prediction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFoundError, ValidationFailed
from core.settings import get_settings
from db import queue
from db import training_runs as db_runs
from db.models import Dataset, Job, JobStatus, TrainingRun, utcnow
from services.run_snapshots import snapshot_json, snapshot_size
from trainer.config import TrainConfig
from trainer.ensemble import build_ensemble
from trainer.examples import read_predictions


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


# Requests ------------------------------------------------------------------------------------------


def start_training(
    session: Session,
    dataset_name: str,
    overrides: dict[str, Any],
    seeds: list[int],
    *,
    name: str = "",
    created_by: int | None = None,
) -> list[tuple[TrainingRun, Job]]:
    """Queue a training run per seed, each as a `train` job (2 attempts)."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, field="dataset")
    config = default_config(overrides)
    runs = create_training_runs(session, dataset, config, seeds, name=name, created_by=created_by)
    return list(zip(runs, queue_runs(session, dataset, runs, config, created_by=created_by), strict=True))


def queue_runs(
    session: Session,
    dataset: Dataset,
    runs: list[TrainingRun],
    config: TrainConfig,
    *,
    created_by: int | None,
    payload: dict[str, Any] | None = None,
) -> list[Job]:
    """A `train` job per run (2 attempts), recorded on the run; `payload` adds to each job's payload."""
    jobs = []
    for run in runs:
        job = queue.enqueue(
            session,
            "train",
            {"run_id": run.id, "dataset": dataset.name, **(payload or {})},
            dataset_id=dataset.id,
            created_by=created_by,
            progress_total=config.epochs,
            max_attempts=2,
        )
        run.job_id = job.id
        jobs.append(job)
    session.flush()
    return jobs


def run_summary(run: TrainingRun, dataset_name: str, job: Job | None) -> dict[str, Any]:
    """A run's headline: status, scores, live progress of its job."""
    metrics = run.metrics or {}
    return {
        "id": run.id,
        "dataset": dataset_name,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "job_id": run.job_id,
        "member_ids": list(run.member_ids or []),
        "encoder": (run.config or {}).get("encoder"),
        "seed": (run.config or {}).get("seed"),
        "val_macro_f1": (metrics.get("val") or {}).get("overall_macro_f1"),
        "test_macro_f1": (metrics.get("test") or {}).get("overall_macro_f1"),
        "best_epoch": metrics.get("best_epoch"),
        "epochs_done": len(run.curve or []),
        "progress": (
            {
                "status": job.status,
                "done": job.progress_done,
                "total": job.progress_total,
                **(job.progress_info or {}),
            }
            if job is not None
            else None
        ),
        "error": run.error,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def run_details(run: TrainingRun, dataset_name: str, job: Job | None) -> dict[str, Any]:
    """A run in full: config, curve, metrics per task and class, artifact location."""
    return {
        **run_summary(run, dataset_name, job),
        "config": run.config or {},
        "curve": run.curve or [],
        "metrics": run.metrics or {},
        "snapshot_size": snapshot_size(run),
        "artifact_dir": run.artifact_dir,
    }


def _jobs_of(session: Session, runs: list[TrainingRun]) -> dict[int, Job]:
    ids = [r.job_id for r in runs if r.job_id is not None]
    return {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}


def list_training_runs(
    session: Session,
    *,
    dataset: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Runs and ensembles, newest first, with their headline scores and live progress."""
    from services.datasets import dataset_named

    ds = dataset_named(session, dataset, field="dataset") if dataset else None
    runs = db_runs.list_runs(session, ds, kind, status, limit, offset)
    names = dict(session.execute(select(Dataset.id, Dataset.name)).tuples().all())
    jobs = _jobs_of(session, runs)
    return [run_summary(r, names.get(r.dataset_id, ""), jobs.get(r.job_id or -1)) for r in runs]


def training_run(session: Session, run_id: int) -> dict[str, Any]:
    run = db_runs.get_run(session, run_id)
    dataset = session.get_one(Dataset, run.dataset_id)
    return run_details(run, dataset.name, session.get(Job, run.job_id) if run.job_id else None)


def run_snapshot(session: Session, run_id: int) -> Iterator[str]:
    """The [sample_id, content_hash] pairs the run trained on, as JSON text chunks read from its snapshot file
    batch by batch (or from the row, for runs recorded before snapshot files)."""
    run = db_runs.get_run(session, run_id)
    if run.snapshot_path is not None and not Path(run.snapshot_path).is_file():
        raise NotFoundError(f"the snapshot file of run {run_id} is gone ({run.snapshot_path})", field="run_id")
    return snapshot_json(run)


def ensemble_details(session: Session, run: TrainingRun) -> dict[str, Any]:
    return run_details(run, session.get_one(Dataset, run.dataset_id).name, None)


def create_runs_for(
    session: Session,
    dataset_name: str,
    overrides: dict[str, Any],
    seeds: list[int],
    *,
    name: str = "",
    created_by: int | None = None,
) -> list[TrainingRun]:
    """Runs (one per seed) for in-process training, without jobs."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, field="dataset")
    return create_training_runs(session, dataset, default_config(overrides), seeds, name=name,
                                created_by=created_by)
