"""Projects and their members (admins manage them; members see their own projects)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError, ValidationFailed
from core.names import check_display_name, check_slug
from db import projects as db_projects
from db.models import Dataset, Project, ProjectMember, ProjectRole, User
from services.access import visible_project_ids


def create(session: Session, name: str, display_name: str | None = None) -> Project:
    check_slug(name, field="name", what="a project name")
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise ConflictError(f"project {name!r} exists", field="name")
    project = Project(name=name, display_name=check_display_name(display_name or name, field="display_name"))
    session.add(project)
    session.flush()
    return project


def view(session: Session, project: Project, user: User | None) -> dict[str, Any]:
    datasets = list(
        session.scalars(select(Dataset.name).where(Dataset.project_id == project.id).order_by(Dataset.name))
    )
    role = None if user is None else db_projects.role_in(session, project.id, user.id)
    return {
        "id": project.id,
        "name": project.name,
        "display_name": project.display_name,
        "created_at": project.created_at,
        "datasets": datasets,
        "my_role": role,
        "members": session.scalar(
            select(func.count()).select_from(ProjectMember).where(ProjectMember.project_id == project.id)
        )
        or 0,
    }


def listing(session: Session, user: User | None) -> list[dict[str, Any]]:
    """Admins: every project; anyone else: the projects they are a member of."""
    return [view(session, p, user) for p in db_projects.list_projects(session, visible_project_ids(session, user))]


def members(session: Session, project_name: str) -> list[dict[str, Any]]:
    project = db_projects.get_project(session, project_name, field="name")
    return [
        {"user": u.name, "role": role, "global_role": u.role} for u, role in db_projects.members(session, project.id)
    ]


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(
            f"user {name!r} not found: a user exists once a token is made for them (augloop token create --name "
            f"{name} --role annotator, or POST /api/v1/tokens)",
            field="user",
        )
    return user


def add_member(session: Session, project_name: str, user_name: str, role: str) -> dict[str, Any]:
    """Make a user a member (or change their role): annotator, or lead."""
    if role not in ProjectRole.__members__:
        raise ValidationFailed(f"role must be one of {', '.join(ProjectRole)}; got {role!r}", field="role")
    project = db_projects.get_project(session, project_name, field="name")
    user = _user(session, user_name)
    db_projects.set_member(session, project.id, user.id, role)
    return {"user": user.name, "role": role, "global_role": user.role}


def remove_member(session: Session, project_name: str, user_name: str) -> int:
    """Take a user out of a project, and give back the review work they hold in its datasets: their leases kept
    those variants from everyone else until they expired (a day at the most), while they could neither renew nor
    release them any more. A user who is no member of it is not found (an admin who picked the wrong project was
    told the access was gone, while the user kept it where it was)."""
    from db.review_assignments import release

    project = db_projects.get_project(session, project_name, field="name")
    user = _user(session, user_name)
    removed = db_projects.remove_member(session, project.id, user.id)
    if not removed:
        raise NotFoundError(f"user {user_name!r} is no member of project {project_name!r}", field="user")
    for dataset_id in session.scalars(select(Dataset.id).where(Dataset.project_id == project.id)):
        release(session, dataset_id, user.id)
    return removed
