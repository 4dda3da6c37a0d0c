"""What every `augloop` command shares: the consoles, the database engine, and the one place where domain
errors become exit code 2 with a message (ErrorMappingGroup)."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


class ErrorMappingGroup(TyperGroup):
    """The top-level command group: a domain error (bad input, not found, conflict) or a trainer error raised
    anywhere below a command exits with code 2 and its message, never with a traceback."""

    def invoke(self, ctx: Any) -> Any:
        from core.errors import DomainError
        from trainer.errors import TrainerError

        try:
            return super().invoke(ctx)
        except (DomainError, TrainerError) as err:
            fail(err.message)


def engine():  # type: ignore[no-untyped-def]
    """The configured database, brought to the latest schema on first use."""
    from db.session import get_engine

    return get_engine()
