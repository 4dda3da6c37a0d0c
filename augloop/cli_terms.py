"""`augloop terms list|add|remove|seed`: a dataset's protected terms (words no augmenter replaces)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from augloop.console import console, engine
from db.session import session_scope
from services import protected_terms

terms_app = typer.Typer(
    help="Protected terms: a dataset's topic words, never replaced by augmenters.", no_args_is_help=True
)

DatasetArg = Annotated[str, typer.Argument(help="Dataset name")]
TermsArg = Annotated[list[str], typer.Argument(help="Words or phrases (a word covers its inflections)")]


def _print(view: dict[str, Any]) -> None:
    table = Table(
        "term",
        "origin",
        "class",
        "chi²",
        title=f"{view['dataset']}: {len(view['terms'])} protected terms",
        title_justify="left",
    )
    for t in view["terms"]:
        cls = f"{t['task']}: {t['label']}" if t["task"] else "-"
        table.add_row(t["term"], t["origin"], cls, f"{t['score']:.1f}" if t["score"] is not None else "-")
    console.print(table)
    if view["seeded_at"] is None:
        console.print("not seeded yet: the first augmentation request or plan seeds them (or `augloop terms seed`)")


@terms_app.command("list")
def list_cmd(dataset: DatasetArg) -> None:
    """Show the protected terms, with the class each seeded one marks."""
    with session_scope(engine()) as session:
        _print(protected_terms.terms_of(session, dataset, None))


@terms_app.command("add")
def add_cmd(dataset: DatasetArg, terms: TermsArg) -> None:
    """Protect words or phrases."""
    with session_scope(engine()) as session:
        _print(protected_terms.edit_terms(session, dataset, terms, [], None))


@terms_app.command("remove")
def remove_cmd(dataset: DatasetArg, terms: TermsArg) -> None:
    """Stop protecting words or phrases."""
    with session_scope(engine()) as session:
        _print(protected_terms.edit_terms(session, dataset, [], terms, None))


@terms_app.command("seed")
def seed_cmd(
    dataset: DatasetArg,
    per_class: Annotated[int, typer.Option(help="The strongest words per task × class")] = 10,
) -> None:
    """Replace the seeded terms with the words most associated with each class (hand-added ones stay)."""
    with session_scope(engine()) as session:
        _print(protected_terms.seed_terms(session, dataset, per_class, None))
