"""Learning-rate selection for the runs of one request (the `lr_select` job's work, and the CLI's in-process
step before its runs): trials on val (trainer.lr_search), recorded on every run as they finish, then each run's
config gets the chosen `lr_scale`, the recipe planned once for all the runs of the request (the plan's
accumulation, R-Drop, layer-wise decay, heads and weight averaging, where the config left them unset), with a
budget what is left of it, and its `train` job.

As in services.run_execution, every database step is a short transaction of its own, no transaction is open
while trials train, and run as a job every write holds the job's lease (queue.hold_lease), so a worker that lost
the job stops writing at once. The last write (the runs' configs, their `train` jobs, the selection job's
completion) is one transaction: either the runs are handed on to training or nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db import queue
from db import training_runs as db_runs
from db.models import Dataset, JobStatus
from db.session import readonly_engine, session_scope
from services.training_data import load_split_data
from trainer.config import TrainConfig
from trainer.lr_search import Selection, select_learning_rate

ProgressFn = Callable[[dict[str, Any]], None]
FinishFn = Callable[[Session, dict[str, Any]], None]


def execute_selection(
    engine: Engine,
    run_ids: list[int],
    *,
    job_id: int | None = None,
    worker_id: str | None = None,
    train_payload: dict[str, Any] | None = None,
    enqueue_training: bool = True,
    created_by: int | None = None,
    progress: ProgressFn | None = None,
    finish: FinishFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    fix_length: bool = False,
) -> dict[str, Any]:
    """Choose the runs' LR scale on val and hand them on: with `enqueue_training`, a `train` job per run
    (`train_payload` in each); without (the CLI), the caller trains them. With `fix_length` (an impact report's
    runs) a budget's length is planned here once for every run (trainer.lr_search). The trials train on the
    first run's data (an impact report's: its originals arm). Raises on failure; the caller records the runs'
    outcome (services.run_execution.record_end)."""
    from services.training import enqueue_train_jobs

    emit = progress or (lambda _e: None)

    guard = queue.lease_guard(job_id, worker_id)

    # Read outside the write (as services.run_execution does): the view and its leak check take seconds at scale.
    with session_scope(readonly_engine(engine)) as session:
        first = db_runs.get_run(session, run_ids[0])
        dataset = session.get_one(Dataset, first.dataset_id)
        config = TrainConfig.from_dict(first.config)
        data = load_split_data(
            session, dataset, config.tasks, variants=config.variants, exclude_methods=config.exclude_methods
        )
        dataset_id, dataset_name = dataset.id, dataset.name
    with session_scope(engine) as session:
        guard(session)
        for run_id in run_ids:
            db_runs.get_run(session, run_id).lr_selection = {"status": "running", "job_id": job_id, "trials": []}

    def record(selection: Selection) -> None:
        emit({"event": "selection", "trials": len(selection.trials)})  # a cancelled job raises here first
        with session_scope(engine) as s:
            guard(s)
            for run_id in run_ids:
                db_runs.get_run(s, run_id).lr_selection = {**selection.to_dict(), "job_id": job_id}

    selection = select_learning_rate(
        config,
        data,
        n_runs=len(run_ids),
        progress=emit,
        on_trial=record,
        should_stop=should_stop,
        fix_length=fix_length,
    )
    # its end, whichever it was: a skipped selection (trials not worth their cost) read 0 of lr_trials done once
    # it had succeeded, and one whose search ended early fewer than it planned
    emit({"event": "selected", "status": selection.status, "reason": selection.reason, "trials": len(selection.trials)})
    overrides = selection.overrides()  # the chosen scale, the request's one recipe, the budget left
    summary = {"run_ids": run_ids, **{k: v for k, v in selection.to_dict().items() if k != "run_plan"}}
    with session_scope(engine) as session:
        guard(session)
        runs = [db_runs.get_run(session, i) for i in run_ids]
        for run in runs:
            record_config = TrainConfig.from_dict(run.config).with_overrides(overrides)
            run.config = record_config.to_dict()
            run.lr_selection = {
                **selection.to_dict(),
                "job_id": job_id,
                "requested_budget_minutes": config.budget_minutes,
            }
        if enqueue_training:
            jobs = enqueue_train_jobs(
                session,
                dataset_id,
                dataset_name,
                [r for r in runs if r.status == JobStatus.queued],
                created_by=created_by,
                payload=train_payload,
            )
            summary["train_job_ids"] = [j.id for j in jobs]
        if finish:
            finish(session, summary)
    return summary
