"""`augloop labels rename`: a dataset's classes after its import (rename one, or merge it into another)."""

from __future__ import annotations

from typing import Annotated

import typer

from augloop.console import console, engine
from db.session import session_scope
from services import label_sets

labels_app = typer.Typer(help="A dataset's classes: rename one, or merge it into another.", no_args_is_help=True)


@labels_app.command("rename")
def rename_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    label: Annotated[str, typer.Argument(help="The class, as the dataset names it")],
    to: Annotated[str, typer.Argument(help="Its new name; a class the task has already: the two are merged")],
    task: Annotated[str, typer.Option("--task", "-t", help="The task the class belongs to")],
) -> None:
    """Rename a class (every sample's label moves with it), or merge it into a class the task has already."""
    with session_scope(engine()) as session:
        done = label_sets.rename_label(session, dataset, task, label, to, None)
    what = "merged into" if done["merged"] else "renamed to"
    console.print(
        f"{done['task']}: {done['label']!r} {what} {done['to']!r} on {done['samples_relabelled']} samples; "
        f"classes now {', '.join(done['labels'])}",
        highlight=False,
    )
    if done["label_model_scores_withdrawn"]:
        console.print(
            f"the label-model scores of {done['label_model_scores_withdrawn']} variants were withdrawn (they name "
            "the old classes): score them again with a run trained after this (`POST …/label-model`)",
            highlight=False,
        )
    console.print("runs trained before keep the label set they learnt: train again to use the new one", highlight=False)
