"""Augmentation impact reports: start one (train jobs for every arm × seed), list them, read one."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import CurrentUser, EngineDep, ResourceId, SessionDep
from api.schemas import JobRead
from db import impact_reports as db_reports
from db.datasets import get_dataset
from db.errors import NotFoundError
from db.models import Dataset, ImpactReport

log = logging.getLogger("augloop.api")
router = APIRouter(tags=["impact"])

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Method = Annotated[str, Field(min_length=1, max_length=100)]


class ImpactReportCreate(BaseModel):
    seeds: list[Seed] = Field(default=[42, 43, 44], min_length=1, max_length=10)
    config: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the trainer config shared by every arm"
    )
    methods: list[Method] | None = Field(
        default=None, max_length=20, description="Leave-one-out arms; default: every approved method"
    )


class ImpactReportRead(BaseModel):
    id: int
    dataset: str
    status: str
    params: dict[str, Any]
    run_ids: dict[str, list[int]]
    progress: dict[str, int]
    result: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None


class ImpactReportCreated(BaseModel):
    report: ImpactReportRead
    jobs: list[JobRead]


def _dataset(session: Any, name: str) -> Dataset:
    try:
        return get_dataset(session, name)
    except NotFoundError as err:
        raise NotFoundError(err.message, field="name") from None


def _read(session: Any, report: ImpactReport, dataset_name: str) -> dict[str, Any]:
    from trainer.impact import progress

    return {
        "id": report.id,
        "dataset": dataset_name,
        "status": report.status,
        "params": report.params or {},
        "run_ids": report.run_ids or {},
        "progress": progress(report, db_reports.report_runs(session, report)),
        "result": report.result,
        "created_at": report.created_at,
        "finished_at": report.finished_at,
    }


def _settle_ended(session: Any, engine: Any, reports: list[ImpactReport]) -> bool:
    """Settle the open reports that are decided: all their runs ended, or one failed. The worker that ends a
    run settles its report; if that worker died before it could (or the queue failed the run after losing
    its worker), the next read does. Returns whether any report was settled (the caller then reads again)."""
    from trainer.impact import decided, settle

    stuck = [
        report.id
        for report in reports
        if report.status in db_reports.OPEN and decided(report, db_reports.report_runs(session, report))
    ]
    if not stuck:
        return False
    session.commit()  # end this request's read transaction, so the next read sees the settled report
    for report_id in stuck:
        try:
            settle(engine, report_id)
        except Exception:  # noqa: BLE001 - busy database, report gone: show it unsettled; the next read retries
            log.warning("settling impact report %s on read failed", report_id, exc_info=True)
    session.expire_all()
    return True


@router.post("/datasets/{name}/impact-reports", response_model=ImpactReportCreated, status_code=202)
def start_report(
    name: str, body: ImpactReportCreate, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    """Queue the trainer on originals only, all approved variants, and each method left out, × seeds."""
    from trainer.impact import create_impact_report
    from trainer.runs import default_config

    dataset = _dataset(session, name)
    if len(set(body.seeds)) != len(body.seeds):
        from db.errors import ValidationFailed

        raise ValidationFailed("seeds must be distinct", field="seeds")
    config = default_config(body.config)
    report, jobs = create_impact_report(
        session, dataset, config, seeds=body.seeds, methods=body.methods, created_by=user.id
    )
    return {"report": _read(session, report, dataset.name), "jobs": jobs}


@router.get("/datasets/{name}/impact-reports", response_model=list[ImpactReportRead])
def list_reports(
    name: str,
    session: SessionDep,
    engine: EngineDep,
    _user: CurrentUser,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[dict[str, Any]]:
    dataset = _dataset(session, name)
    reports = db_reports.list_reports(session, dataset, limit, offset)
    if _settle_ended(session, engine, reports):
        reports = db_reports.list_reports(session, dataset, limit, offset)
    return [_read(session, r, dataset.name) for r in reports]


@router.get("/impact-reports/{report_id}", response_model=ImpactReportRead)
def get_report(
    report_id: ResourceId, session: SessionDep, engine: EngineDep, _user: CurrentUser
) -> dict[str, Any]:
    """Status, progress (ended runs / all runs) and, once every run has ended, the result."""
    report = db_reports.get_report(session, report_id)
    if _settle_ended(session, engine, [report]):
        report = db_reports.get_report(session, report_id)
    dataset = session.get_one(Dataset, report.dataset_id)
    return _read(session, report, dataset.name)
