"""Jobs: listing, status, cancellation and artifacts; and what the queue does when it ends a job by itself.

The queue (db/queue.py) knows jobs only. A job kind whose job owns other rows or files registers here what must
happen when one of its jobs ends without succeeding: the train kind ends its training run, the lr_select kind the
runs that wait for it, the import kind deletes its upload.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from core.settings import Settings
from db import queue
from db import training_runs as db_runs
from db.models import Dataset, Job, JobStatus, TrainingRun, User
from db.session import delete_when_committed
from services.access import Need, check_dataset_id, visible_project_ids
from services.datasets import dataset_named, upload_of
from services.exporting import export_job_files, export_job_parts
from services.failures import worker_silent
from services.label_model import withdraw_rescoring
from services.listing import listed_values
from services.training import attempt_leftovers, runs_root


@queue.on_job_end("train")
@queue.on_job_end("lr_select")  # the runs waiting for their LR selection point at its job
def end_training_runs(session: Session, job_ids: list[int], status: str, error: str, now: datetime) -> None:
    """The runs still open end with their job; what their attempts kept aside goes once that commits. An LR
    selection this job was to make (or was making) ends with it, so the run never shows one still under way.
    The label-model scores a run wrote before it failed (they are written in batches ahead of the run's record)
    are withdrawn: the review queue's order and filters, the label-model summary and auto-approval must not rest
    on a model that was never stored."""
    for run_id in db_runs.end_runs_of_jobs(session, job_ids, status, error, now):
        # its folder too: an attempt killed after moving its artifacts into place, before its record committed
        for path in [runs_root() / str(run_id), *attempt_leftovers(run_id)]:
            delete_when_committed(session, path)
    unfinished = select(TrainingRun.id).where(
        TrainingRun.job_id.in_(job_ids), TrainingRun.status != JobStatus.succeeded
    )  # as the database has them now (the UPDATE above leaves loaded rows as they were)
    db_runs.withdraw_scores(session, list(session.scalars(unfinished)))
    for run in db_runs.runs_of_jobs(session, job_ids):
        selection = run.lr_selection or {}
        # the in-process selection (`augloop train`) has no job of its own: the run's job ends it
        of_job = selection.get("job_id") in job_ids or (selection.get("job_id") is None and run.job_id in job_ids)
        if selection.get("status") in ("queued", "running") and of_job:
            run.lr_selection = {**selection, "status": status}


@queue.on_job_end("label_scores")
def withdraw_rescorings(session: Session, job_ids: list[int], status: str, error: str, now: datetime) -> None:
    """A person's rescoring of the queue that ends without succeeding (cancelled, failed past retrying, lost
    with no attempts left) gives back the scores it replaced: the queue is never left half scored by the model
    chosen and half by the one before, and the label-model summary names the model the variants carry."""
    withdraw_rescoring(session, job_ids)


@queue.on_job_end("import")
def delete_uploads(session: Session, job_ids: list[int], status: str, error: str, now: datetime) -> None:
    """An import that will not run again leaves no upload behind (a file of up to 16 GiB), once its end commits."""
    for params in session.scalars(select(Job.params).where(Job.id.in_(job_ids))):
        if upload := upload_of(params):
            delete_when_committed(session, upload)


@queue.on_job_end("export")
def delete_export_parts(session: Session, job_ids: list[int], status: str, error: str, now: datetime) -> None:
    """An export that will not run again leaves no attempt's file behind (a worker killed mid-write leaves one
    of up to the dataset's size; only a later attempt of the same job, or the dataset's deletion, removed it),
    nor a file an attempt moved into place before it was killed, its completion never committed."""
    for job_id in job_ids:
        for path in [*export_job_files(job_id), *export_job_parts(job_id)]:
            delete_when_committed(session, path)


def settle_lost_jobs(session: Session) -> int:
    """End (or re-queue) the jobs whose process stopped renewing their lease, through their kinds' end hooks:
    what every worker does before each claim, for callers that run where no worker may be (the CLI). Returns
    how many jobs changed."""
    return queue.requeue_expired(session)


# The job kinds the workers run (workers/registry.py; tests/test_queue.py checks that the two agree).
JOB_KINDS = ("augment", "export", "import", "label_scores", "lr_select", "pseudo_label", "train")


LISTED_ENTRIES = 100  # of each list in a listed job's params


def job_view(job: Job, now: datetime, *, listing: bool = False) -> dict[str, Any]:
    """A job as the API shows it, with `worker_silent` read against `now` (the database's clock). In a listing
    each list in its params is cut to its first LISTED_ENTRIES entries, with `<key>_count` saying how many it
    holds (an augment job names up to 50,000 sources: a page of 500 such jobs would be millions of objects);
    `GET /jobs/{id}` shows them whole. The row itself is not changed."""
    out = {attr.key: getattr(job, attr.key) for attr in sa_inspect(Job).column_attrs}
    out["worker_silent"] = worker_silent(job.status, job.lease_until, now)
    if not listing:
        return out
    params = dict(job.params or {})
    for key, value in job.params.items() if job.params else ():
        if isinstance(value, list) and len(value) > LISTED_ENTRIES:
            params[key] = value[:LISTED_ENTRIES]
            params[f"{key}_count"] = len(value)
    out["params"] = params
    return out


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    dataset: str | None = None,
    limit: int = 50,
    offset: int = 0,
    user: User | None,
) -> tuple[list[dict[str, Any]], int]:
    """Jobs as listed (`listed`), newest first, filtered by status, kind or dataset (comma-separated lists), and
    their total; only the jobs of the user's projects' datasets (admins: all, with the imports of new
    datasets)."""
    statuses = listed_values(status, [s.value for s in JobStatus], "status")
    kinds = listed_values(kind, JOB_KINDS, "kind")
    query = select(Job)
    projects = visible_project_ids(session, user)
    if projects is not None:
        query = query.where(Job.dataset_id.in_(select(Dataset.id).where(Dataset.project_id.in_(projects))))
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    if dataset:
        # A missing dataset and another project's answer alike, naming the field that held the name.
        query = query.where(Job.dataset_id == dataset_named(session, dataset, user, field="dataset").id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    now = queue.db_now(session)
    jobs = session.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset))
    return [job_view(job, now, listing=True) for job in jobs], total


def get_job(session: Session, job_id: int, user: User | None, need: Need = Need.member) -> Job:
    """A job of a dataset the user may see (with `need`); to anyone else it does not exist."""
    missing = f"job {job_id} not found"
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(missing, field="job_id")
    check_dataset_id(session, job.dataset_id, user, need, missing=missing, field="job_id")
    return job


def job_details(session: Session, job_id: int, user: User | None) -> dict[str, Any]:
    """GET /jobs/{id}: the job whole, if the user may see it."""
    return job_view(get_job(session, job_id, user), queue.db_now(session))


def cancel_job(session: Session, job_id: int, user: User | None) -> Job:
    """Cancel a queued job now (its kind's end hook runs), or ask a running one to stop; the project's leads."""
    get_job(session, job_id, user, Need.lead)
    return queue.request_cancel(session, job_id)


def cancel_job_details(session: Session, job_id: int, user: User | None) -> dict[str, Any]:
    """POST /jobs/{id}/cancel: the job as GET /jobs/{id} then shows it (a running job whose worker is dead is
    `worker_silent` in both answers: asked to stop, it will not hear; the queue ends it when it next looks)."""
    return job_view(cancel_job(session, job_id, user), queue.db_now(session))


def artifact_path(session: Session, job_id: int, settings: Settings, user: User | None) -> Path:
    """The file a finished export job wrote; only files under the data directory are served."""
    job = get_job(session, job_id, user)
    path_str = (job.result or {}).get("path")
    if job.kind == "export" and job.status in ("queued", "running"):  # not yet: the same request, once it has run
        raise ConflictError(f"job {job_id} has no artifact yet (status {job.status}): retry when it has succeeded")
    if job.status != "succeeded" or not path_str:
        raise NotFoundError(f"job {job_id} has no artifact (status {job.status})", field="job_id")
    root = settings.data_dir.resolve()
    # Relative to the data directory (jobs before: absolute), and inside it as written: exports/ may be a link
    # (as runs/ may), so the path is checked before links are followed, never after.
    path = Path(os.path.normpath(root / str(path_str)))
    if not path.is_relative_to(root):
        raise NotFoundError(f"artifact of job {job_id} is gone", field="job_id")
    if not path.is_file():
        raise NotFoundError(
            f"artifact of job {job_id} is gone (a dataset keeps the files of its newest"
            f" {settings.exports_kept_per_dataset} exports); export again",
            field="job_id",
        )
    return path


def jobs_by_id(session: Session, job_ids: list[int]) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.id.in_(job_ids)).order_by(Job.id)))
