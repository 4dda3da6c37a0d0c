"""Training: start runs (one job per seed), follow them, combine them into ensembles, predict, pseudo-label
(the API side of the trainer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import CurrentUser, ResourceId, SessionDep, SettingsDep
from api.schemas import JobRead
from api.training_schemas import (
    EnsembleCreate,
    PredictRequest,
    PredictResponse,
    PseudoLabelCreate,
    TrainingRunCreate,
    TrainingRunRead,
    TrainingRunsCreated,
    TrainingRunSummary,
)
from db import queue
from db import training_runs as db_runs
from db.datasets import get_dataset
from db.errors import NotFoundError, TooLargeError, ValidationFailed
from db.models import Dataset, Job, TrainingRun

router = APIRouter(tags=["training"])


def _dataset(session: Any, name: str, field: str = "dataset") -> Dataset:
    try:
        return get_dataset(session, name)
    except NotFoundError as err:
        raise NotFoundError(err.message, field=field) from None


def _summary(run: TrainingRun, dataset_name: str, job: Job | None) -> dict[str, Any]:
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


def _read(run: TrainingRun, dataset_name: str, job: Job | None) -> dict[str, Any]:
    return {
        **_summary(run, dataset_name, job),
        "config": run.config or {},
        "curve": run.curve or [],
        "metrics": run.metrics or {},
        "snapshot_size": len(run.snapshot or []),
        "artifact_dir": run.artifact_dir,
    }


def _jobs_of(session: Any, runs: list[TrainingRun]) -> dict[int, Job]:
    ids = [r.job_id for r in runs if r.job_id is not None]
    return {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}


@router.post("/training-runs", response_model=TrainingRunsCreated, status_code=202)
def start_training(body: TrainingRunCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Queue a training run per seed (annotators may start them); follow with GET /training-runs/{id}."""
    from trainer.runs import create_training_runs, default_config

    dataset = _dataset(session, body.dataset)
    config = default_config(body.config)
    runs = create_training_runs(session, dataset, config, body.seeds, name=body.name, created_by=user.id)
    jobs = []
    for run in runs:
        job = queue.enqueue(
            session,
            "train",
            {"run_id": run.id, "dataset": dataset.name},
            dataset_id=dataset.id,
            created_by=user.id,
            progress_total=config.epochs,
            max_attempts=2,
        )
        run.job_id = job.id
        jobs.append(job)
    session.flush()
    return {"runs": [_read(r, dataset.name, j) for r, j in zip(runs, jobs, strict=True)], "jobs": jobs}


@router.get("/training-runs", response_model=list[TrainingRunSummary])
def list_training_runs(
    session: SessionDep,
    _user: CurrentUser,
    dataset: str | None = None,
    kind: str | None = Query(None, pattern="^(single|ensemble)$"),
    status: str | None = None,
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[dict[str, Any]]:
    """Runs and ensembles, newest first, with their headline scores and live progress."""
    ds = _dataset(session, dataset) if dataset else None
    runs = db_runs.list_runs(session, ds, kind, status, limit, offset)
    names = dict(session.execute(select(Dataset.id, Dataset.name)).tuples().all())
    jobs = _jobs_of(session, runs)
    return [_summary(r, names.get(r.dataset_id, ""), jobs.get(r.job_id or -1)) for r in runs]


@router.get("/training-runs/{run_id}", response_model=TrainingRunRead)
def get_training_run(run_id: ResourceId, session: SessionDep, _user: CurrentUser) -> dict[str, Any]:
    """A run: config, status, progress, per-epoch curve, val/test metrics per task and class, confusions."""
    run = db_runs.get_run(session, run_id)
    dataset = session.get_one(Dataset, run.dataset_id)
    return _read(run, dataset.name, session.get(Job, run.job_id) if run.job_id else None)


@router.get("/training-runs/{run_id}/snapshot")
def get_snapshot(run_id: ResourceId, session: SessionDep, _user: CurrentUser) -> dict[str, Any]:
    """The [sample_id, content_hash] pairs the run trained on (to compare or reproduce runs)."""
    run = db_runs.get_run(session, run_id)
    return {"run_id": run.id, "size": len(run.snapshot or []), "snapshot": run.snapshot or []}


@router.post("/ensembles", response_model=TrainingRunRead, status_code=201)
def create_ensemble(body: EnsembleCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Combine finished runs: probabilities averaged per task (weighted by val macro-F1), temperature."""
    from trainer.runs import create_ensemble as build

    run = build(
        session,
        body.run_ids,
        weighted=body.weighted,
        temperature=body.temperature,
        name=body.name,
        created_by=user.id,
    )
    return _read(run, session.get_one(Dataset, run.dataset_id).name, None)


@router.post("/models/{model_id}/predict", response_model=PredictResponse)
def predict(
    model_id: ResourceId, body: PredictRequest, session: SessionDep, settings: SettingsDep, _user: CurrentUser
) -> dict[str, Any]:
    """Per-task probabilities for texts from a finished run or ensemble."""
    from trainer.predict import probs_to_json
    from trainer.serving import load_predictor, model_spec

    if len(body.texts) > settings.trainer_predict_max_texts:
        raise TooLargeError(f"at most {settings.trainer_predict_max_texts} texts per request", field="texts")
    for i, text in enumerate(body.texts):
        if not text.strip():
            raise ValidationFailed(f"texts[{i}] is empty", field=f"texts.{i}")
        if len(text) > settings.max_text_chars:
            raise TooLargeError(
                f"texts[{i}] exceeds {settings.max_text_chars} characters", field=f"texts.{i}"
            )
    spec = model_spec(session, model_id)
    session.commit()  # end the request's transaction: none may stay open while a model runs
    predictor = load_predictor(spec)
    probs = predictor.predict_proba(body.texts)
    tasks = predictor.tasks
    labels = [
        {t.name: t.labels[int(probs[t.name][i].argmax())] for t in tasks} for i in range(len(body.texts))
    ]
    return {
        "model_id": model_id,
        "kind": spec.kind,
        "tasks": [{"name": t.name, "labels": t.labels} for t in tasks],
        "labels": labels,
        "probabilities": probs_to_json(tasks, probs),
    }


@router.post("/datasets/{name}/pseudo-labels", response_model=JobRead, status_code=202)
def pseudo_labels(name: str, body: PseudoLabelCreate, session: SessionDep, user: CurrentUser) -> Job:
    """Label the dataset's unlabelled train texts with a model; confident ones enter the review queue."""
    from trainer.serving import model_spec

    dataset = _dataset(session, name, field="name")
    spec = model_spec(session, body.model_id)
    if spec.dataset_id != dataset.id:
        raise ValidationFailed(f"run {body.model_id} was trained on another dataset", field="model_id")
    return queue.enqueue(
        session,
        "pseudo_label",
        {"dataset": dataset.name, "model_id": body.model_id, "threshold": body.threshold},
        dataset_id=dataset.id,
        created_by=user.id,
        max_attempts=2,
    )
