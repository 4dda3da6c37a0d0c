"""`augloop token create|list|revoke`: API tokens (only their hashes are stored)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from augloop.console import console, engine, err_console, fail
from core.inputs import MAX_ID
from db.session import session_scope
from services import tokens

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="User name")],
    role: Annotated[str, typer.Option(help="annotator or admin")] = "annotator",
    expires_days: Annotated[float | None, typer.Option(help="Expire after this many days")] = None,
) -> None:
    """Create a token and print it once (only its hash is stored). It is stored only once printed: a token whose
    output went nowhere (stdout closed, a full disk) was stored active, an admin's credential nobody held (an
    attacker's find)."""
    if sys.stdout is None:
        fail("standard output is closed: the token would be shown nowhere; nothing was stored")
    with session_scope(engine()) as session:
        issued = tokens.issue(session, name, role, expires_days)
        session.flush()
        err_console.print(
            f"token {issued.token_id} for {issued.user.name} ({issued.user.role}); it is shown only once:"
        )
        print(issued.token, flush=True)  # a failed write raises here, and the transaction rolls back


@token_app.command("list")
def token_list() -> None:
    """List tokens (id, user, role, prefix, state: active, expired or revoked; when last used)."""
    with session_scope(engine()) as session:
        table = Table("id", "user", "role", "prefix", "created", "expires", "state", "last used")
        for t in tokens.all_tokens(session):
            table.add_row(
                str(t.id),
                t.user.name,
                t.user.role,
                t.prefix + "…",
                f"{t.created_at:%Y-%m-%d %H:%M}",
                f"{t.expires_at:%Y-%m-%d}" if t.expires_at else "-",
                tokens.token_state(t),
                f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-",
            )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[
        int | None, typer.Argument(help="Token id (from `augloop token list`)", min=1, max=MAX_ID)
    ] = None,
    user: Annotated[str | None, typer.Option(help="Revoke every token of this user")] = None,
) -> None:
    """Revoke a token, or all of a user's tokens."""
    with session_scope(engine()) as session:
        n = tokens.revoke(session, token_id, user_name=user)
    console.print(f"revoked {n} token(s)")


user_app = typer.Typer(help="Change a user's role.", no_args_is_help=True)


@user_app.command("role")
def user_role(
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Argument(help="annotator or admin")],
) -> None:
    """Change a user's role; their tokens keep working under the new role, and the review statuses that read it
    (their approval of their own submission, their edits) are recomputed."""
    with session_scope(engine()) as session:
        changed = tokens.change_role(session, name, role)
        said = f"{changed.user.name} is now {changed.user.role}"
        moved = [
            f"{dataset}: " + ", ".join(f"{n} {transition}" for transition, n in sorted(transitions.items()))
            for dataset, transitions in changed.status_changes.items()
        ]
    console.print(said, markup=False, highlight=False)
    for line in moved:
        console.print(f"  review statuses recomputed in {line}", markup=False, highlight=False)
