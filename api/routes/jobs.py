"""Jobs: status and progress, cancellation, artifacts."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from sqlalchemy import func, select

from api.deps import CurrentUser, ResourceId, SessionDep, SettingsDep
from api.schemas import JobList, JobRead
from db import queue
from db.datasets import get_dataset
from db.errors import NotFoundError
from db.models import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    _user: CurrentUser,
    status: str | None = None,
    kind: str | None = None,
    dataset: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict:
    """Jobs, newest first, filtered by status, kind or dataset."""
    query = select(Job)
    if status:
        query = query.where(Job.status.in_(status.split(",")))
    if kind:
        query = query.where(Job.kind.in_(kind.split(",")))
    if dataset:
        query = query.where(Job.dataset_id == get_dataset(session, dataset).id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = list(session.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)))
    return {"items": items, "total": total}


def _job(session, job_id: int) -> Job:  # type: ignore[no-untyped-def]
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} not found", field="job_id")
    return job


@router.get("/{job_id}", response_model=JobRead)
def get_job(job_id: ResourceId, session: SessionDep, _user: CurrentUser) -> Job:
    """A job's status, progress (done/total and per-kind counters), result or error."""
    return _job(session, job_id)


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: ResourceId, session: SessionDep, _user: CurrentUser) -> Job:
    """Cancel a queued job now, or a running one at its next progress report."""
    return queue.request_cancel(session, job_id)


@router.get("/{job_id}/artifact", response_class=FileResponse)
def job_artifact(job_id: ResourceId, session: SessionDep, settings: SettingsDep, _user: CurrentUser) -> FileResponse:
    """The file a finished export job wrote."""
    job = _job(session, job_id)
    path_str = (job.result or {}).get("path")
    if job.status != "succeeded" or not path_str:
        raise NotFoundError(f"job {job_id} has no artifact (status {job.status})", field="job_id")
    path = Path(path_str).resolve()
    root = settings.data_dir.resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFoundError(f"artifact of job {job_id} is gone", field="job_id")
    return FileResponse(path, filename=path.name)
