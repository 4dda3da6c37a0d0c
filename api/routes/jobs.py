"""Jobs: status and progress, cancellation, artifacts."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.deps import MAX_ID, CurrentUser, HeadRequest, ResourceId, SessionDep, SettingsDep
from api.downloads import HeadFileResponse
from api.json_body import StrictJSONRoute
from api.schemas import JobList, JobRead
from services import jobs as job_service

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=StrictJSONRoute)


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    user: CurrentUser,
    status: str | None = None,
    kind: str | None = None,
    dataset: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict:
    """Jobs, newest first, filtered by status, kind or dataset. Each list in a job's `params` (an augment job's
    `items`) is cut to its first 100 entries here, with `<key>_count` giving its length; `GET /jobs/{id}`
    shows it whole."""
    items, total = job_service.list_jobs(
        session, status=status, kind=kind, dataset=dataset, limit=limit, offset=offset, user=user
    )
    return {"items": items, "total": total}


@router.get("/{job_id}", response_model=JobRead)
def get_job(job_id: ResourceId, session: SessionDep, user: CurrentUser) -> dict:
    """A job's status, progress (done/total and per-kind counters), result or error."""
    return job_service.job_details(session, job_id, user)


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: ResourceId, session: SessionDep, user: CurrentUser) -> dict:
    """Cancel a queued job now, or a running one at its next progress report (the project's leads); the job as
    `GET /jobs/{id}` then shows it."""
    return job_service.cancel_job_details(session, job_id, user)


@router.get("/{job_id}/artifact", response_class=FileResponse)
def job_artifact(
    job_id: ResourceId, session: SessionDep, settings: SettingsDep, user: CurrentUser, head: HeadRequest
) -> FileResponse:
    """The file a finished export job wrote (409 while the job is queued or running)."""
    path = job_service.artifact_path(session, job_id, settings, user)
    return (HeadFileResponse if head else FileResponse)(path, filename=path.name)
