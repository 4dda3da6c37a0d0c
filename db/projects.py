"""Projects and memberships: data access."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from db.locks import PROJECT_QUOTA, hold_until_commit
from db.models import OPEN_JOB_STATUSES, Dataset, Job, Project, ProjectMember, TrainingRun, User
from db.session import affected_rows


def get_project(session: Session, name: str, *, field: str = "project") -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFoundError(f"project {name!r} not found", field=field)
    return project


def list_projects(session: Session, ids: set[int] | None = None) -> list[Project]:
    query = select(Project).order_by(Project.name)
    if ids is not None:
        query = query.where(Project.id.in_(ids))
    return list(session.scalars(query))


def role_in(session: Session, project_id: int, user_id: int) -> str | None:
    return session.scalar(
        select(ProjectMember.role).where(ProjectMember.project_id == project_id, ProjectMember.user_id == user_id)
    )


def memberships(session: Session, user_id: int) -> dict[int, str]:
    """project id → the user's role there."""
    return dict(
        session.execute(select(ProjectMember.project_id, ProjectMember.role).where(ProjectMember.user_id == user_id))
        .tuples()
        .all()
    )


def members(session: Session, project_id: int) -> list[tuple[User, str]]:
    return list(
        session.execute(
            select(User, ProjectMember.role)
            .join(ProjectMember, ProjectMember.user_id == User.id)
            .where(ProjectMember.project_id == project_id)
            .order_by(User.name)
        ).tuples()
    )


def set_member(session: Session, project_id: int, user_id: int, role: str) -> None:
    row = session.get(ProjectMember, (project_id, user_id))
    if row is None:
        session.add(ProjectMember(project_id=project_id, user_id=user_id, role=role))
    else:
        row.role = role
    session.flush()


def remove_member(session: Session, project_id: int, user_id: int) -> int:
    return (
        affected_rows(
            session.execute(
                delete(ProjectMember).where(ProjectMember.project_id == project_id, ProjectMember.user_id == user_id)
            )
        )
        or 0
    )


def take_quota_turn(session: Session, project_id: int) -> None:
    """Wait for the project's other quota checks to end, and hold up those that start, until the transaction
    ends: two requests that each queue their jobs and then count the project's jobs in flight would each miss
    the other's (uncommitted) jobs, and both pass a cap that only one of them fits under."""
    hold_until_commit(session, PROJECT_QUOTA, project_id)


def _open_in_project(
    session: Session, entity: type[Job] | type[TrainingRun], project_id: int, kinds: Collection[str], total: Any
) -> int:
    """`total` over the project's queued and running jobs (or training runs) of these kinds."""
    found = session.scalar(
        select(total)
        .select_from(entity)
        .join(Dataset, Dataset.id == entity.dataset_id)
        .where(Dataset.project_id == project_id, entity.kind.in_(kinds), entity.status.in_(OPEN_JOB_STATUSES))
    )
    return int(found or 0)


def jobs_in_flight(
    session: Session, project_id: int, kinds: Collection[str], measure: Literal["jobs", "work_left"]
) -> int:
    """The project's queued and running jobs of these kinds: how many, or the work they have left (progress
    total less done)."""
    left = func.coalesce(func.sum(Job.progress_total - Job.progress_done), 0)
    return _open_in_project(session, Job, project_id, kinds, func.count() if measure == "jobs" else left)


def runs_in_flight(session: Session, project_id: int, kinds: Collection[str] = ("single",)) -> int:
    """The project's queued and running training runs of these kinds (a run waiting for its learning-rate
    selection included)."""
    return _open_in_project(session, TrainingRun, project_id, kinds, func.count())
