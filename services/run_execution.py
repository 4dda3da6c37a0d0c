"""Executing a training run (the `train` job's work, and the CLI's in-process run).

Every database step is a short transaction of its own: read the data, then train or predict with no
transaction open; score the pending variants page by page, writing the scores in batches of their own; then
write the outcome (and, for a job, its completion) in one final transaction. The run's snapshot goes to a
Parquet file among its artifacts (services/run_snapshots.py), referenced from the run.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.settings import get_settings
from db import queue
from db import training_runs as db_runs
from db.models import OPEN_JOB_STATUSES, Dataset, JobStatus, TrainingRun
from db.session import readonly_engine, session_scope
from services import label_model
from services.access import without_server_paths
from services.distributed_training import train_distributed
from services.run_snapshots import SNAPSHOT_FILE, pairs_digest, write_snapshot
from services.training import attempt_leftovers, checkpoint_dir, runs_root
from services.training_data import left_out_line, load_split_data
from trainer.classical import ClassicalConfig, save_classical, train_classical
from trainer.config import TrainConfig
from trainer.decision import decide
from trainer.errors import artifacts_written
from trainer.examples import TaskSpec
from trainer.metrics import summary_line
from trainer.predict import predict_texts, served_dtype
from trainer.train import LoopControl, save_artifacts, train_model

ProgressFn = Callable[[dict[str, Any]], None]
FinishFn = Callable[[Session, dict[str, Any]], None]


@dataclass(frozen=True)
class _Attempt:
    """One attempt at run `run_id`: every write checks the job's lease (`guard`, in the write's transaction);
    progress goes to `emit`, the job's completion to `finish` (None in the CLI)."""

    engine: Engine
    run_id: int
    guard: Callable[[Session], None]
    emit: ProgressFn
    finish: FinishFn | None
    left_out: dict[str, list[int]] = field(default_factory=dict)  # what the data's reader kept out of train

    @property
    def out_dir(self) -> Path:
        return runs_root() / str(self.run_id)

    def aside(self) -> Path:
        """A directory of this attempt's own beside `out_dir`, where it writes until the run is recorded."""
        return self.out_dir.with_name(f"{self.run_id}.partial-{uuid.uuid4().hex[:8]}")

    def record(
        self, result: Any, staging: Path, *, best_epoch: int | None, curve: list[Any], variants_scored: int, **more: Any
    ) -> dict[str, Any]:
        """Write the run's snapshot among its artifacts in `staging`; then, in one transaction under the lease,
        record the run (and through `finish` the job) finished and move the artifacts into place."""
        out_dir = self.out_dir
        with artifacts_written():
            train_samples = write_snapshot(result.snapshot, staging / SNAPSHOT_FILE)
        digest = pairs_digest(result.snapshot)  # here, not in every ensemble request
        # the job's last phase, what its progress keeps once it succeeds ("scoring pending variants" stayed)
        val = result.metrics["val"]["overall_macro_f1"]
        scored = f", {variants_scored} pending variants scored" if variants_scored else ""
        self.emit({"event": "phase", "phase": f"done: val macro-F1 {val:.3f}{scored}"})
        summary = {
            "run_id": self.run_id,
            # relative to the data directory: the job's result is shown to the project's members (access.shown_path)
            "artifact_dir": str(out_dir.relative_to(get_settings().data_dir.resolve())),
            "best_epoch": best_epoch,
            "epochs_run": len(curve),
            "train_samples": train_samples,
            "val_macro_f1": result.metrics["val"]["overall_macro_f1"],
            "test_macro_f1": (result.metrics["test"] or {}).get("overall_macro_f1"),
            "variants_scored": variants_scored,
            **({"left_out": {reason: len(ids) for reason, ids in self.left_out.items()}} if self.left_out else {}),
            **more,
        }
        with session_scope(self.engine) as session:
            self.guard(session)
            db_runs.finish_run(
                session,
                self.run_id,
                metrics={**result.metrics, "left_out": self.left_out} if self.left_out else result.metrics,
                curve=curve,
                snapshot_path=str(out_dir / SNAPSHOT_FILE),
                snapshot_size=train_samples,
                snapshot_digest=digest,
                artifact_dir=str(out_dir),
            )
            if self.finish:
                self.finish(session, summary)
            # Still inside the transaction that holds the lease: only the job's owner replaces the run's files.
            if out_dir.exists():  # a previous attempt of this run
                shutil.rmtree(out_dir)
            staging.rename(out_dir)
        self.emit(
            {"event": "finished", **summary, "summary": summary_line(result.metrics["test"] or result.metrics["val"])}
        )
        return summary


def drop_leftovers_if_ended(engine: Engine, run_id: int) -> None:
    """After an attempt lost its job: if the run has ended (or is gone with its dataset), nothing resumes it, and
    what this attempt went on writing after the end's own clean-up (a checkpoint) goes too."""
    with session_scope(readonly_engine(engine)) as session:
        run = session.get(TrainingRun, run_id)
        ended = run is None or run.status not in OPEN_JOB_STATUSES
    if ended:
        discard_checkpoint(run_id)


def discard_checkpoint(run_id: int) -> None:
    """The run ended for good (finished, cancelled, failed past retrying): nothing will resume it, and no attempt
    is left to write beside it; its checkpoint goes, with what killed attempts left aside."""
    for path in attempt_leftovers(run_id):
        shutil.rmtree(path, ignore_errors=True)


def execute_run(
    engine: Engine,
    run_id: int,
    *,
    job_id: int | None = None,
    worker_id: str | None = None,
    progress: ProgressFn | None = None,
    finish: FinishFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train run `run_id`, save its artifacts, score the dataset's pending variants, record everything.

    Run as a job (`job_id` and `worker_id`), every write happens only while the worker still holds the job's
    lease (queue.hold_lease in the write's own transaction), and the artifacts are written aside and moved into
    place in the final transaction: a worker that lost its job to another stops writing at once, and never
    touches the new owner's files. Raises on failure; the caller records the outcome with `record_end` (it knows
    cancel from failure).

    Training checkpoints every epoch (and every `checkpoint_every_steps`) into `checkpoint_dir(run_id)`, each
    save checking the lease first (`_still_ours`); an attempt that finds a checkpoint of the same config and data
    resumes from it. `should_stop` (the worker's shutdown) makes training checkpoint at its next optimizer step
    and raise TrainingStopped. A run with `nproc` > 1 trains in torchrun's processes
    (services/distributed_training.py), which check no lease: the worker that tails their progress checks it
    (every 2 s at most) and ends them.
    """
    emit = progress or (lambda _e: None)

    guard = queue.lease_guard(job_id, worker_id)

    with session_scope(engine) as session:
        guard(session)
        run = db_runs.mark_running(session, run_id, job_id)
        dataset_id = run.dataset_id
        config: Any = (ClassicalConfig if run.kind == "tfidf" else TrainConfig).from_dict(run.config)
    # Read outside the write: on SQLite a write transaction holds the database's one write lock, and reading
    # the view (and the leak check's index, built once per worker and dataset) takes seconds at scale.
    with session_scope(readonly_engine(engine)) as session:
        data = load_split_data(
            session,
            session.get_one(Dataset, dataset_id),
            config.tasks,
            variants=config.variants,
            exclude_methods=config.exclude_methods,
        )
    attempt = _Attempt(engine, run_id, guard, emit, finish, data.left_out)
    if data.left_out:
        emit({"event": "phase", "phase": left_out_line(data.left_out)})
    if isinstance(config, ClassicalConfig):
        return _execute_classical(attempt, config, data)
    if config.num_threads is None and get_settings().trainer_threads > 0:
        config = config.with_overrides({"num_threads": get_settings().trainer_threads})

    def on_event(event: dict[str, Any]) -> None:
        emit(event)  # first: a job that lost its lease or was cancelled raises here and records nothing more
        if event["event"] == "epoch":
            entry = {k: v for k, v in event.items() if k != "event"}
            with session_scope(engine) as s:
                guard(s)
                db_runs.record_epoch(s, run_id, entry)
        elif event["event"] == "start" and event.get("curve"):  # resumed: the epochs trained before
            with session_scope(engine) as s:
                guard(s)
                db_runs.restore_curve(s, run_id, event["curve"])

    work = attempt.aside()
    stop = should_stop or (lambda: False)
    try:
        if config.nproc > 1:
            result, staging = train_distributed(
                config, data, job_dir=work, checkpoint_dir=checkpoint_dir(run_id), progress=on_event, should_stop=stop
            )
        else:
            control = LoopControl(
                checkpoint_dir=checkpoint_dir(run_id), should_stop=stop, before_save=lambda: _still_ours(attempt)
            )
            result = train_model(config, data, progress=on_event, control=control)
            staging = work
            save_artifacts(result, staging)
        summary = _score_and_record(attempt, dataset_id, data, config, result, staging)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # moved into place on success; an abandoned attempt's files
    discard_checkpoint(run_id)
    return summary


def _still_ours(attempt: _Attempt) -> None:
    """Before each checkpoint: the job still this worker's, or LeaseLost. The checkpoint directory is the job's
    owner's: a worker whose lease ran out (stalled past it) and whose job another took over would overwrite the
    new owner's checkpoint, its every-epoch save coming before the epoch's lease-checked record, and its
    every-N-steps and shutdown saves having none."""
    with session_scope(attempt.engine) as s:
        attempt.guard(s)


def _execute_classical(attempt: _Attempt, config: ClassicalConfig, data: Any) -> dict[str, Any]:
    """A TF-IDF member run: fit, save aside, record and move into place under the lease (as a transformer's)."""
    attempt.emit({"event": "phase", "phase": "training the TF-IDF member"})
    # AUGLOOP_TRAINER_THREADS caps the processes its cross-validation uses, as it caps a transformer's threads
    result = train_classical(config, data, progress=attempt.emit, n_jobs=get_settings().trainer_threads or None)
    attempt.emit({"event": "fitted"})  # its one unit of work: the job's progress reads 1 of 1, not 0 of 1
    staging = attempt.aside()
    try:
        with artifacts_written():
            save_classical(result, staging)
        return attempt.record(result, staging, best_epoch=None, curve=[], variants_scored=0)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _score_and_record(
    attempt: _Attempt, dataset_id: int, data: Any, config: TrainConfig, result: Any, staging: Path
) -> dict[str, Any]:
    attempt.emit({"event": "phase", "phase": "scoring pending variants"})
    with session_scope(readonly_engine(attempt.engine)) as session:
        # A run replaces earlier label-model scores only where its val macro-F1 is better (services.label_model).
        scorer = label_model.scorer_of(db_runs.get_run(session, attempt.run_id), metrics=result.metrics)
    scored, seen = score_pending_variants(
        attempt.engine,
        attempt.run_id,
        dataset_id,
        result.model,
        result.tokenizer,
        data.tasks,
        config.max_length,
        attempt.emit,
        attempt.guard,
        scorer=scorer,
        rules=result.decision,
        precision=result.precision,
    )
    summary = attempt.record(
        result,
        staging,
        best_epoch=result.best_epoch,
        curve=result.curve,
        variants_scored=scored,
        variants_not_rescored=seen - scored,  # better scores kept, or decided meanwhile
    )
    # recorded: its scores stand, and the ones they replaced go (a process killed first leaves them, unread)
    with session_scope(attempt.engine) as session:
        db_runs.keep_replaced_scores(session, attempt.run_id)
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
        queue.lease_guard(job_id, worker_id)(session)
        db_runs.end_run(session, run_id, status, without_server_paths(error)[-4000:] if error else None)


def end_held_run(engine: Engine, run_id: int, job_id: int, worker_id: str, status: str, error: str) -> bool:
    """End an in-process run and the job its process holds for it (`augloop train`), in one transaction:
    `status` is cancelled or failed, unless the run has ended already (its LR selection failed), whose end the
    job then takes. False when the job is no longer the process's (the queue's sweep ended it while the process
    was stopped); else the run's checkpoint goes, as nothing will resume it."""
    error = without_server_paths(error)[-4000:]
    with session_scope(engine) as session:
        run = session.get(TrainingRun, run_id)
        if run is not None and run.status in (JobStatus.failed, JobStatus.cancelled):
            status, error = run.status, run.error or error
        try:
            if status == JobStatus.cancelled:
                queue.hold_lease(session, job_id, worker_id)
                if run is not None and run.status in OPEN_JOB_STATUSES:
                    db_runs.end_run(session, run_id, JobStatus.cancelled, error)
                queue.mark_cancelled(session, job_id, worker_id)
            else:
                queue.fail(session, job_id, worker_id, error, retry=False)  # the job's end hook ends the run
        except queue.LeaseLost:
            return False
    discard_checkpoint(run_id)
    return True


def score_pending_variants(
    engine: Engine,
    run_id: int,
    dataset_id: int,
    model: Any,
    tokenizer: Any,
    tasks: list[TaskSpec],
    max_length: int,
    emit: ProgressFn,
    guard: Callable[[Session], None],
    *,
    scorer: dict[str, Any] | None = None,
    rules: dict[str, Any] | None = None,
    precision: str = "fp32",
) -> tuple[int, int]:
    """Score the dataset's pending variants with the run's model, a page at a time, each page's scores written
    in set-based batches, each its own short transaction under the job's lease (services.label_model
    .score_pending): on SQLite the write lock is held for milliseconds per batch, never across the whole
    scoring. Scores written before an attempt fails stay, tagged with this run; the retry overwrites them."""
    replace_if = label_model.automatic_rule(scorer, [t.name for t in tasks]) if scorer is not None else None

    def score_page(page: list[db_runs.PendingVariant], progress: ProgressFn) -> list[db_runs.ConsistencyScore]:
        return consistency_scores(
            model, tokenizer, tasks, page, max_length, progress, rules, precision, (scorer or {}).get("flag_below")
        )

    def write(scores: list[db_runs.ConsistencyScore]) -> int:
        # written ahead of the run's record: a score replaced is kept, given back if the run ends unfinished
        return label_model.write_scores(
            engine, run_id, scores, scorer=scorer, replace_if=replace_if, guard=guard, keep_replaced=True
        )

    return label_model.score_pending(engine, dataset_id, score_page, write, emit)


def consistency_scores(
    model: Any,
    tokenizer: Any,
    tasks: list[TaskSpec],
    variants: list[db_runs.PendingVariant],
    max_length: int,
    emit: ProgressFn,
    rules: dict[str, Any] | None = None,
    precision: str = "fp32",
    flag_below: dict[str, dict[str, float]] | None = None,
) -> list[db_runs.ConsistencyScore]:
    """Per variant: p(intended label) per task; consistency = minimum over tasks; flag = in some task the variant
    looks less like its intended class than 9 in 10 of the class's val texts (`flag_below`: services.label_model
    .scorer_of's), or, where that is unknown, the model predicts another label (under its decision rule)."""
    if not variants:
        return []
    probs = predict_texts(
        model,
        tokenizer,
        [v.text for v in variants],
        max_length=max_length,
        dtype=served_dtype(precision, next(model.parameters()).device),  # as the run evaluated and serves
        on_batch=lambda d, t: emit({"event": "scoring", "done": d, "total": t}),
    )
    return label_model.consistency_from_probs(tasks, variants, probs, decide(probs, rules), flag_below)


def planned_epochs(engine: Engine, run_id: int) -> int:
    """The epochs run `run_id` may train (its job's first progress total; the plan refines it when training
    starts); NotFoundError when it is gone."""
    with session_scope(readonly_engine(engine)) as session:
        run = db_runs.get_run(session, run_id)
        return int(run.config.get("epochs", 1)) if run.kind == "single" else 1
