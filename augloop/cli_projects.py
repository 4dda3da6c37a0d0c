"""`augloop project create|list|members|add-member|remove-member`: projects and who works in them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from augloop.console import console, engine
from db.session import session_scope
from services import projects

project_app = typer.Typer(help="Projects and their members (annotators and leads).", no_args_is_help=True)
ProjectName = Annotated[str, typer.Argument(help="Project")]
MemberName = Annotated[str, typer.Argument(help="User name (from `augloop token create --name`)")]


@project_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A slug: lower-case letters, digits, _ and -")],
    display_name: Annotated[str | None, typer.Option(help="The name people see")] = None,
) -> None:
    """Create an empty project."""
    with session_scope(engine()) as session:
        project = projects.create(session, name, display_name)
        console.print(f"project {project.name} created", highlight=False)


@project_app.command("list")
def list_cmd() -> None:
    """Every project, its datasets and how many members it has."""
    with session_scope(engine()) as session:
        rows = projects.listing(session, None)
    table = Table("name", "display name", "datasets", "members")
    for p in rows:
        table.add_row(p["name"], p["display_name"], ", ".join(p["datasets"]) or "-", str(p["members"]))
    console.print(table)


@project_app.command("members")
def members(name: ProjectName) -> None:
    """Who is in the project, with which role."""
    with session_scope(engine()) as session:
        rows = projects.members(session, name)
    table = Table("user", "role in the project", "global role")
    for m in rows:
        table.add_row(m["user"], m["role"], m["global_role"])
    console.print(table)


@project_app.command("add-member")
def add_member(
    name: ProjectName, user: MemberName, role: Annotated[str, typer.Option(help="annotator or lead")] = "annotator"
) -> None:
    """Add a user to a project, or change their role in it."""
    with session_scope(engine()) as session:
        m = projects.add_member(session, name, user, role)
    console.print(f"{m['user']} is {m['role']} in {name}", highlight=False)


@project_app.command("remove-member")
def remove_member(name: ProjectName, user: MemberName) -> None:
    """Remove a user from a project."""
    with session_scope(engine()) as session:
        projects.remove_member(session, name, user)
    console.print(f"removed {user} from project {name}")
