"""Projects and memberships: admins create projects and manage who is a member (annotator or lead)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import AdminUser, CurrentUser, SessionDep
from api.json_body import StrictJSONRoute
from api.schemas import RequestBody
from services import projects

router = APIRouter(prefix="/projects", tags=["projects"], route_class=StrictJSONRoute)


class ProjectCreate(RequestBody):
    name: str = Field(min_length=1, max_length=64, description="A slug: lower-case letters, digits, _ and -")
    display_name: str | None = Field(default=None, max_length=200)


class ProjectRead(BaseModel):
    id: int
    name: str
    display_name: str
    created_at: datetime
    datasets: list[str]
    members: int
    my_role: str | None = Field(description="Your role in the project (none for an admin who is not a member)")


class MemberSet(RequestBody):
    user: str = Field(min_length=1, max_length=120)
    role: Literal["annotator", "lead"]


class MemberRead(BaseModel):
    user: str
    role: str
    global_role: str


@router.get("", response_model=list[ProjectRead])
def list_projects(session: SessionDep, user: CurrentUser) -> list[dict[str, Any]]:
    """The projects you are a member of (admins: all of them)."""
    return projects.listing(session, user)


@router.post("", response_model=ProjectRead, status_code=201)
def create_project(body: ProjectCreate, session: SessionDep, admin: AdminUser) -> dict[str, Any]:
    """A new, empty project (admins)."""
    return projects.view(session, projects.create(session, body.name, body.display_name), admin)


@router.get("/{name}/members", response_model=list[MemberRead])
def list_members(name: str, session: SessionDep, _admin: AdminUser) -> list[dict[str, Any]]:
    """Who is in the project, with which role (admins)."""
    return projects.members(session, name)


@router.put("/{name}/members", response_model=MemberRead)
def set_member(name: str, body: MemberSet, session: SessionDep, _admin: AdminUser) -> dict[str, Any]:
    """Add a user to the project, or change their role in it (admins)."""
    return projects.add_member(session, name, body.user, body.role)


@router.delete("/{name}/members/{user:path}", status_code=204)  # a user name may hold "/"
def remove_member(name: str, user: str, session: SessionDep, _admin: AdminUser) -> None:
    """Remove a user from the project (admins)."""
    projects.remove_member(session, name, user)
