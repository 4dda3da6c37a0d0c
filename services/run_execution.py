"""Executing a training run (the `train` job's work, and the CLI's in-process run).

Every database step is a short transaction of its own: read the data, then train or predict with no
transaction open, then write the outcome (and, for a job, its completion) in one final transaction.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.settings import get_settings
from db import queue
from db import training_runs as db_runs
from db.models import Dataset
from db.session import readonly_engine, session_scope
from services.training import runs_root
from services.training_data import load_split_data
from services.variant_scoring import label_scores
from trainer.config import TrainConfig
from trainer.examples import TaskSpec
from trainer.metrics import summary_line
from trainer.predict import predict_texts
from trainer.train import save_artifacts, train_model

ProgressFn = Callable[[dict[str, Any]], None]
FinishFn = Callable[[Session, dict[str, Any]], None]


def execute_run(
    engine: Engine,
    run_id: int,
    *,
    job_id: int | None = None,
    worker_id: str | None = None,
    progress: ProgressFn | None = None,
    finish: FinishFn | None = None,
) -> dict[str, Any]:
    """Train run `run_id`, save its artifacts, score the dataset's pending variants, record everything.

    Run as a job (`job_id` and `worker_id`), every write happens only while the worker still holds the job's
    lease (queue.hold_lease in the write's own transaction), and the artifacts are written aside and moved into
    place in the final transaction: a worker that lost its job to another stops writing at once, and never
    touches the new owner's files. Raises on failure; the caller records the outcome with `record_end` (it knows
    cancel from failure).
    """
    emit = progress or (lambda _e: None)

    def guard(session: Session) -> None:
        if job_id is not None and worker_id is not None:
            queue.hold_lease(session, job_id, worker_id)

    with session_scope(engine) as session:
        guard(session)
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
                guard(s)
                db_runs.record_epoch(s, run_id, entry)

    result = train_model(config, data, progress=on_event)
    out_dir = runs_root() / str(run_id)
    staging = out_dir.with_name(f"{run_id}.partial-{uuid.uuid4().hex[:8]}")
    try:
        save_artifacts(result, staging)
        return _score_and_record(engine, run_id, dataset_id, data, config, result, staging, out_dir, guard,
                                 emit, finish)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # moved into place on success; an abandoned attempt's files


def _score_and_record(
    engine: Engine,
    run_id: int,
    dataset_id: int,
    data: Any,
    config: TrainConfig,
    result: Any,
    staging: Any,
    out_dir: Any,
    guard: Callable[[Session], None],
    emit: ProgressFn,
    finish: FinishFn | None,
) -> dict[str, Any]:

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
        guard(session)
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
        # Still inside the transaction that holds the lease: only the job's owner replaces the run's files.
        if out_dir.exists():  # a previous attempt of this run
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    emit(
        {
            "event": "finished",
            **summary,
            "summary": summary_line(result.metrics["test"] or result.metrics["val"]),
        }
    )
    return summary


def record_end(
    engine: Engine,
    run_id: int,
    status: str,
    error: str | None = None,
    *,
    job_id: int | None = None,
    worker_id: str | None = None,
) -> None:
    """Record how a run ended; as a job, only while the worker still holds the job (else LeaseLost)."""
    with session_scope(engine) as session:
        if job_id is not None and worker_id is not None:
            queue.hold_lease(session, job_id, worker_id)
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
    return [
        db_runs.ConsistencyScore(variant.id, variant.version, score.consistency, score.flag, score.probs)
        for variant, score in zip(variants, label_scores(tasks, probs, [v.labels for v in variants]), strict=True)
    ]


def planned_epochs(engine: Engine, run_id: int) -> int:
    """The epochs run `run_id` is configured for (its job's progress total); NotFoundError when it is gone."""
    with session_scope(readonly_engine(engine)) as session:
        run = db_runs.get_run(session, run_id)
        return int(run.config.get("epochs", 1))
