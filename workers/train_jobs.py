"""Job kinds of the trainer: `train` (one training run: a transformer or the TF-IDF member), `lr_select`
(learning-rate trials on val for the seeds of one request, which then queues their `train` jobs),
`pseudo_label` (label unlabelled texts with a model), `label_scores` (rescore the pending variants with a model
a person chose).

Ensembles need no job: they combine the probabilities that finished runs saved (milliseconds of numpy), so
the API builds them in the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from core.errors import DomainError
from db.models import JobStatus
from db.queue import LeaseLost
from services.failures import failure_text
from trainer.errors import TrainerError, TrainingStopped
from workers.registry import JobCancelled, JobContext, JobReleased, PermanentJobError, handler


def train_progress(ctx: JobContext, epochs: int) -> Any:
    """A trainer progress callback that reports to the job (and raises once it is cancelled or lost)."""

    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            resumed = event.get("resumed_from_step")
            ctx.report(
                done=len(event.get("curve") or []),
                total=event.get("epochs", epochs),
                phase="training" if resumed is None else f"training (resumed from step {resumed})",
                train_samples=event["train_samples"],
                device=event["device"],
                processes=event.get("processes", 1),
                planned_steps=event.get("steps"),
                resumed_from_step=resumed,
            )
        elif kind == "batch":
            ctx.report(epoch=event["epoch"], batch=event["batch"], batches=event["batches"], loss=event["loss"])
        elif kind == "epoch":
            ctx.report(
                done=event["epoch"],
                epoch=event["epoch"],
                loss=event["train_loss"],
                val_macro_f1=event["val_macro_f1"],
                best_val_macro_f1=event["best_val_macro_f1"],
            )
        elif kind == "phase":  # e.g. "training the TF-IDF member", "scoring pending variants"
            ctx.report(phase=event["phase"])
        elif kind == "classical" and "folds_done" in event:  # the TF-IDF member's search for C, fold by fold
            ctx.report(
                phase=f"TF-IDF member: cross-validating C for {event['task']}",
                folds_done=event["folds_done"],
                folds=event["folds"],
            )
        elif kind == "scoring":
            ctx.report(phase="scoring pending variants", scored=event["done"], to_score=event["total"])
        elif kind == "fitted":  # a TF-IDF member: fitted, its one unit of work done
            ctx.report(done=1)
        elif kind == "checkpoint_failed":  # training goes on; a lost worker's retry resumes from an earlier one
            ctx.report(checkpoint_failures=event["failures"], checkpoint_error=event["error"])
        elif kind == "checkpoint_saved":  # written again after failures
            ctx.report(checkpoint_error=None)
        else:
            ctx.check_cancelled()

    return on_event


@handler("train")
def run_train(ctx: JobContext) -> dict[str, Any]:
    from services.impact import mark_report_running
    from services.run_execution import planned_epochs

    run_id = int(ctx.params["run_id"])
    with _permanent_on_domain_errors():
        epochs = planned_epochs(ctx.engine, run_id)
    report_id = ctx.params.get("impact_report_id")
    if report_id:
        mark_report_running(ctx.engine, int(report_id))
    try:
        return _execute(ctx, run_id, epochs)
    finally:
        if report_id:  # the report's last run to end computes it (idempotently)
            _settle_report(ctx.engine, int(report_id))


def _settle_report(engine: Any, report_id: int) -> None:
    import logging

    from core.errors import NotFoundError
    from services.impact import settle

    try:
        settle(engine, report_id)
    except NotFoundError:
        logging.getLogger(__name__).warning("impact report %s is gone", report_id)
    except Exception:  # the run's own outcome is already recorded; reading the report settles it again
        logging.getLogger(__name__).exception("settling impact report %s failed", report_id)


def _execute(ctx: JobContext, run_id: int, epochs: int) -> dict[str, Any]:
    from services.run_execution import discard_checkpoint, drop_leftovers_if_ended, execute_run, record_end

    owner: dict[str, Any] = {"job_id": ctx.job_id, "worker_id": ctx.worker_id}  # run writes need the lease
    try:
        return execute_run(
            ctx.engine,
            run_id,
            job_id=ctx.job_id,
            worker_id=ctx.worker_id,
            progress=train_progress(ctx, epochs),
            finish=ctx.complete_in,
            should_stop=ctx.stopping.is_set,
        )
    except TrainingStopped as stopped:  # the worker is shutting down: the next worker resumes the run
        note = (
            f"the worker stopped; resumes from the checkpoint at step {stopped.steps_done}"
            if stopped.saved
            else f"the worker stopped after {stopped.steps_done} steps; restarts"
        )
        record_end(ctx.engine, run_id, JobStatus.queued, note, **owner)
        raise JobReleased(note) from stopped
    except JobCancelled:
        record_end(ctx.engine, run_id, JobStatus.cancelled, "cancelled", **owner)
        discard_checkpoint(run_id)
        raise
    except LeaseLost:
        # Another worker owns the job (and the run, and its checkpoint) now; or no one does: the run ended
        # meanwhile (its lease expired past retrying, its dataset was deleted) and nothing will resume it.
        drop_leftovers_if_ended(ctx.engine, run_id)
        raise
    except (DomainError, TrainerError) as err:  # bad config or data, an encoder that cannot load
        record_end(ctx.engine, run_id, JobStatus.failed, err.message, **owner)
        discard_checkpoint(run_id)
        raise PermanentJobError(err.message) from err
    except Exception as err:
        if ctx.will_retry(err):  # the job runs again (from the checkpoint): the run waits for it
            said = "met a database outage (it does not count)" if ctx.outage(err) else "failed"
            record_end(
                ctx.engine,
                run_id,
                JobStatus.queued,
                f"attempt {ctx.attempt} {said}, retrying: {failure_text(err)}",
                **owner,
            )
        else:
            record_end(ctx.engine, run_id, JobStatus.failed, failure_text(err), **owner)
            discard_checkpoint(run_id)
        raise


def _selection_progress(ctx: JobContext, trials: int) -> Any:
    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "trial_batch":
            ctx.report(
                phase=f"LR trial {event['trial']}/{event['trials']}",
                epoch=event["epoch"],
                batch=event["batch"],
                batches=event["batches"],
                loss=event["loss"],
            )
        elif kind == "trial":
            ctx.report(
                done=event["trial"], total=trials, last_scale=event["scale"], last_val_macro_f1=event["val_macro_f1"]
            )
        elif kind == "phase":
            ctx.report(phase=event["phase"])
        elif kind == "selected":  # its true end: every trial it ran of as many, or skipped (all of its work done)
            ran = event["trials"] if event["status"] != "skipped" else trials
            ctx.report(done=ran, total=ran, phase=f"{event['status']}: {event['reason']}", lr_selection=event["status"])
        else:
            ctx.check_cancelled()

    return on_event


@handler("lr_select", companion_of="train")
def run_lr_select(ctx: JobContext) -> dict[str, Any]:
    """Trials on val for the runs of one request, then their `train` jobs (services.lr_selection)."""
    from services.impact import mark_report_running
    from services.lr_selection import execute_selection
    from services.run_execution import record_end

    run_ids = [int(i) for i in ctx.params["run_ids"]]
    train_payload = dict(ctx.params.get("train_payload") or {})
    report_id = train_payload.get("impact_report_id")
    owner: dict[str, Any] = {"job_id": ctx.job_id, "worker_id": ctx.worker_id}

    def end_runs(status: str, error: str) -> None:
        for run_id in run_ids:
            try:
                record_end(ctx.engine, run_id, status, error, **owner)
            except DomainError:  # a run deleted meanwhile
                continue

    if report_id:
        mark_report_running(ctx.engine, int(report_id))
    settle = False
    try:
        return execute_selection(
            ctx.engine,
            run_ids,
            job_id=ctx.job_id,
            worker_id=ctx.worker_id,
            train_payload=train_payload,
            created_by=ctx.created_by,
            progress=_selection_progress(ctx, int(ctx.params.get("trials") or 0) or 1),
            finish=ctx.complete_in,
            should_stop=ctx.stopping.is_set,
            fix_length=bool(ctx.params.get("fix_length")),
        )
    except TrainingStopped as stopped:  # the worker is shutting down: the selection runs again elsewhere
        note = f"the worker stopped in learning-rate selection (after {stopped.steps_done} trial steps); it restarts"
        end_runs(JobStatus.queued, note)
        raise JobReleased(note) from stopped
    except JobCancelled:
        end_runs(JobStatus.cancelled, "cancelled during learning-rate selection")
        settle = True
        raise
    except LeaseLost:
        raise
    except (DomainError, TrainerError) as err:
        end_runs(JobStatus.failed, f"learning-rate selection: {err.message}")
        settle = True
        raise PermanentJobError(err.message) from err
    except Exception as err:
        if ctx.will_retry(err):
            end_runs(JobStatus.queued, f"LR selection attempt {ctx.attempt} failed, retrying: {failure_text(err)}")
        else:
            end_runs(JobStatus.failed, f"learning-rate selection: {failure_text(err)}")
            settle = True
        raise
    finally:
        if report_id and settle:
            _settle_report(ctx.engine, int(report_id))


def _apply_model(
    ctx: JobContext, execute: Callable[..., dict[str, Any]], phase: str, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """A job that applies a model (`model_id`) to a dataset's texts: `execute(engine, dataset, model_id, *args,
    **kwargs)`, reporting each event's done and total under `phase`; bad input or a model that cannot load is
    permanent (no retry can fix it)."""

    def on_event(event: dict[str, Any]) -> None:
        ctx.report(done=event.get("done"), total=event.get("total"), phase=phase)

    with _permanent_on_domain_errors():
        return execute(
            ctx.engine,
            ctx.params["dataset"],
            int(ctx.params["model_id"]),
            *args,
            progress=on_event,
            finish=ctx.complete_in,
            **kwargs,
        )


@contextmanager
def _permanent_on_domain_errors() -> Iterator[None]:
    """Bad input, a model that cannot load: no retry can fix it."""
    try:
        yield
    except (DomainError, TrainerError) as err:
        raise PermanentJobError(err.message) from err


@handler("pseudo_label")
def run_pseudo_label(ctx: JobContext) -> dict[str, Any]:
    from services.prediction import execute_pseudo_labels

    threshold = float(ctx.params["threshold"])
    return _apply_model(
        ctx, execute_pseudo_labels, "predicting", threshold, job_id=ctx.job_id, created_by=ctx.created_by
    )


@handler("label_scores")
def run_label_scores(ctx: JobContext) -> dict[str, Any]:
    """Rescore every pending variant with the run or ensemble a person chose (services.label_model)."""
    from services.label_model import execute_rescoring

    return _apply_model(ctx, execute_rescoring, "scoring pending variants", job_id=ctx.job_id, worker_id=ctx.worker_id)
