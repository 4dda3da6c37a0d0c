"""Job kinds of the trainer: `train` (one training run), `pseudo_label` (label unlabelled texts with a model),
`label_scores` (rescore the pending variants with a model a person chose).

Ensembles need no job: they combine the probabilities that finished runs saved (milliseconds of numpy), so
the API builds them in the request.
"""

from __future__ import annotations

from typing import Any

from core.errors import DomainError
from db.models import JobStatus
from db.queue import LeaseLost
from trainer.errors import TrainerError
from workers.registry import JobCancelled, JobContext, PermanentJobError, handler


def _progress(ctx: JobContext, epochs: int) -> Any:
    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            ctx.report(
                done=0,
                total=epochs,
                phase="training",
                train_samples=event["train_samples"],
                device=event["device"],
            )
        elif kind == "batch":
            ctx.report(
                epoch=event["epoch"], batch=event["batch"], batches=event["batches"], loss=event["loss"]
            )
        elif kind == "epoch":
            ctx.report(
                done=event["epoch"],
                epoch=event["epoch"],
                loss=event["train_loss"],
                val_macro_f1=event["val_macro_f1"],
                best_val_macro_f1=event["best_val_macro_f1"],
            )
        elif kind == "scoring":
            ctx.report(phase="scoring pending variants", scored=event["done"], to_score=event["total"])
        else:
            ctx.check_cancelled()

    return on_event


@handler("train")
def run_train(ctx: JobContext) -> dict[str, Any]:
    from services.impact import mark_report_running
    from services.run_execution import planned_epochs

    run_id = int(ctx.params["run_id"])
    try:
        epochs = planned_epochs(ctx.engine, run_id)
    except (DomainError, TrainerError) as err:
        raise PermanentJobError(err.message) from err
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
    from services.run_execution import execute_run, record_end

    owner: dict[str, Any] = {"job_id": ctx.job_id, "worker_id": ctx.worker_id}  # run writes need the lease
    try:
        return execute_run(
            ctx.engine,
            run_id,
            job_id=ctx.job_id,
            worker_id=ctx.worker_id,
            progress=_progress(ctx, epochs),
            finish=lambda session, result: ctx.complete_in(session, result),
        )
    except JobCancelled:
        record_end(ctx.engine, run_id, JobStatus.cancelled, "cancelled", **owner)
        raise
    except LeaseLost:
        raise  # another worker owns the job (and the run) now
    except (DomainError, TrainerError) as err:  # bad config or data, an encoder that cannot load
        record_end(ctx.engine, run_id, JobStatus.failed, err.message, **owner)
        raise PermanentJobError(err.message) from err
    except Exception as err:
        if ctx.retries_left:  # the job runs again: the run waits for it (and an impact report with it)
            record_end(ctx.engine, run_id, JobStatus.queued, f"attempt {ctx.attempt} failed, retrying: "
                       f"{type(err).__name__}: {err}", **owner)
        else:
            record_end(ctx.engine, run_id, JobStatus.failed, f"{type(err).__name__}: {err}", **owner)
        raise


@handler("pseudo_label")
def run_pseudo_label(ctx: JobContext) -> dict[str, Any]:
    from services.prediction import execute_pseudo_labels

    def on_event(event: dict[str, Any]) -> None:
        ctx.report(done=event.get("done"), total=event.get("total"), phase="predicting")

    try:
        return execute_pseudo_labels(
            ctx.engine,
            ctx.params["dataset"],
            int(ctx.params["model_id"]),
            float(ctx.params["threshold"]),
            job_id=ctx.job_id,
            created_by=ctx.created_by,
            progress=on_event,
            finish=lambda session, result: ctx.complete_in(session, result),
        )
    except (DomainError, TrainerError) as err:
        raise PermanentJobError(err.message) from err


@handler("label_scores")
def run_label_scores(ctx: JobContext) -> dict[str, Any]:
    """Rescore every pending variant with the run or ensemble a person chose (services.label_model)."""
    from services.label_model import execute_rescoring

    def on_event(event: dict[str, Any]) -> None:
        ctx.report(done=event.get("done"), total=event.get("total"), phase="scoring pending variants")

    try:
        return execute_rescoring(
            ctx.engine,
            ctx.params["dataset"],
            int(ctx.params["model_id"]),
            progress=on_event,
            finish=lambda session, result: ctx.complete_in(session, result),
        )
    except (DomainError, TrainerError) as err:
        raise PermanentJobError(err.message) from err
