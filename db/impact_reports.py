"""Impact reports: which training runs (arms × seeds) a report uses, and its outcome.

Functions only flush; the caller owns the transaction. The outcome is written with a conditional UPDATE
(`finish_report`): two workers that finish the report's last runs at the same moment may both compute it, but
only the first write lands, so the result is neither computed twice into the row nor lost.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased

from core.errors import NotFoundError
from db.chunks import chunked
from db.datasets import unreviewed_submission
from db.models import (
    OPEN_JOB_STATUSES,
    Dataset,
    ImpactReport,
    JobStatus,
    Origin,
    ReviewStatus,
    Sample,
    TrainingRun,
    utcnow,
)
from db.session import affected_rows


def approved_methods(session: Session, dataset: Dataset) -> list[str]:
    """The augmentation methods that have approved train-split variants that train (pseudo-labels are not a
    method; a variant of a submitted text still under review trains only once that text is approved, as
    db.datasets' view says: counted, a report measured a method whose variants no arm held, Δ 0 by construction)."""
    source = aliased(Sample)
    rows = session.scalars(
        select(Sample.method)
        .distinct()
        .where(
            Sample.dataset_id == dataset.id,
            Sample.origin == Origin.augmented,
            Sample.review_status == ReviewStatus.approved,
            Sample.split == "train",
            Sample.method.is_not(None),
            ~exists().where(source.id == Sample.parent_id, unreviewed_submission(source)),
        )
    )
    return sorted(m for m in rows if m)


def has_test_split(session: Session, dataset: Dataset) -> bool:
    return (
        session.scalar(
            select(Sample.id)
            .where(
                Sample.dataset_id == dataset.id,
                Sample.origin == Origin.original,
                Sample.split == "test",
            )
            .limit(1)
        )
        is not None
    )


def create_report(session: Session, dataset: Dataset, params: dict[str, Any], created_by: int | None) -> ImpactReport:
    report = ImpactReport(
        dataset_id=dataset.id,
        status=JobStatus.queued,
        params=params,
        run_ids={},
        result=None,
        created_by=created_by,
    )
    session.add(report)
    session.flush()
    return report


def get_report(session: Session, report_id: int, *, field: str = "report_id") -> ImpactReport:
    report = session.get(ImpactReport, report_id)
    if report is None:
        raise NotFoundError(f"impact report {report_id} not found", field=field)
    return report


def list_reports(session: Session, dataset: Dataset, limit: int = 100, offset: int = 0) -> list[ImpactReport]:
    query = select(ImpactReport).where(ImpactReport.dataset_id == dataset.id)
    return list(session.scalars(query.order_by(ImpactReport.id.desc()).limit(limit).offset(offset)))


def report_runs(session: Session, report: ImpactReport) -> dict[int, TrainingRun]:
    ids = [i for ids in (report.run_ids or {}).values() for i in ids]
    if not ids:
        return {}
    return {r.id: r for r in session.scalars(select(TrainingRun).where(TrainingRun.id.in_(ids)))}


def arms_of_runs(session: Session, dataset_ids: set[int]) -> dict[int, dict[str, Any]]:
    """The runs the impact reports of these datasets trained, each with its report and arm (`originals`,
    `without:<method>`, `tfidf:<arm>`...): run id → {"report_id", "arm"}."""
    if not dataset_ids:
        return {}
    query = select(ImpactReport.id, ImpactReport.run_ids).where(ImpactReport.dataset_id.in_(dataset_ids))
    return {
        int(run_id): {"report_id": report_id, "arm": arm}
        for report_id, run_ids in session.execute(query).tuples()
        for arm, ids in (run_ids or {}).items()
        for run_id in ids
    }


def mark_running(session: Session, report_id: int) -> None:
    session.execute(
        update(ImpactReport)
        .where(ImpactReport.id == report_id, ImpactReport.status == JobStatus.queued)
        .values(status=JobStatus.running)
        .execution_options(synchronize_session=False)
    )


def finish_report(session: Session, report_id: int, status: str, result: dict[str, Any]) -> bool:
    """Record the outcome unless another worker already did; True when this call's write landed."""
    written = affected_rows(
        session.execute(
            update(ImpactReport)
            .where(ImpactReport.id == report_id, ImpactReport.status.in_(OPEN_JOB_STATUSES))
            .values(status=status, result=result, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    )
    session.flush()
    return bool(written)


def sample_kinds(session: Session, sample_ids: list[int]) -> dict[int, str | None]:
    """sample id → None for an original, else its method (a variant) or its origin (a submitted text, a
    pseudo-label); ids no longer stored are left out."""
    out: dict[int, str | None] = {}
    for ids in chunked(sample_ids):
        for sid, origin, method in session.execute(
            select(Sample.id, Sample.origin, Sample.method).where(Sample.id.in_(ids))
        ):
            out[sid] = None if origin == Origin.original else (method or str(origin))
    return out
