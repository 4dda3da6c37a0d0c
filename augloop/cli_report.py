"""`augloop report impact NAME` and `augloop report show ID`: augmentation impact reports from the shell.

`impact` enqueues the report's training jobs (the workers run them); `--wait` follows the runs with a progress
bar and prints the report once the last one has ended.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from augloop.console import between, console, engine, fail, parse_seeds
from core.inputs import MAX_ID
from db.session import session_scope
from review_ui.impact_tables import f1_text
from review_ui.render import quantity
from services import impact as impact_service

report_app = typer.Typer(help="Augmentation impact reports.", no_args_is_help=True)


def _state(report_id: int) -> dict[str, Any]:
    """The report as it is now (a decided report settles on this read, as in the API)."""
    db = engine()
    with session_scope(db) as session:
        return impact_service.report_details(session, db, report_id, None)


def _unmeasured(entry: dict[str, Any]) -> bool:
    """A class no test text holds: its F1 and Δ say nothing of what augmentation did for it."""
    return entry.get("support") == 0


def _fmt_ci(entry: dict[str, Any]) -> str:
    if entry.get("delta") is None or _unmeasured(entry):
        return "-"
    low, high = entry["ci"]
    return f"{entry['delta'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def print_report(state: dict[str, Any]) -> None:
    progress = state["progress"]
    console.print(
        f"[bold]impact report {state['id']}[/]: {state['status']} ({progress['done']}/{progress['total']} runs ended)",
        highlight=False,
        markup=True,
    )
    result = state.get("result") or {}
    if "error" in result:
        console.print(f"[red]{escape(str(result['error']))}[/]", highlight=False, markup=True)
    for task, info in (result.get("tasks") or {}).items():
        ensembles = any(str(arm).startswith(impact_service.ENSEMBLE) for arm in result.get("arms") or [])
        table = Table(
            title=f"{task}: F1 ×100, mean ± sd over seeds {result.get('seeds')}; Δ vs originals"
            + (f" (ensemble arms: vs {impact_service.ENSEMBLE}{impact_service.BASELINE})" if ensembles else "")
            + " [95% CI]",
            title_justify="left",
        )
        for col in ("class", "test texts", "arm", "F1", "Δ [95% CI]"):
            table.add_column(col, justify="left" if col in ("class", "arm") else "right")
        for name, arms in info["classes"].items():
            for arm, entry in arms.items():
                table.add_row(
                    escape(name),
                    str(entry.get("support", (info.get("support") or {}).get(name, info.get("n_test", "")))),
                    escape(arm),
                    "no test text" if _unmeasured(entry) else f1_text(entry),
                    _fmt_ci(entry),
                )
        console.print(table)
        contributions = info.get("contributions") or {}
        if any(contributions.values()):
            ctable = Table(title=f"{task}: contribution = all approved − without the method", title_justify="left")
            for col in ("class", "method", "Δ [95% CI]"):
                ctable.add_column(col, justify="right" if col.startswith("Δ") else "left")
            for name, methods in contributions.items():
                absent = (info.get("support") or {}).get(name) == 0
                for method, entry in methods.items():
                    ctable.add_row(escape(name), escape(method), "no test text" if absent else _fmt_ci(entry))
            console.print(ctable)
    warning = (result.get("training_sets") or {}).get("warning")
    if warning:
        console.print(f"[yellow]{escape(str(warning))}[/]", highlight=False, markup=True)


@report_app.command("impact")
def impact(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated: each arm trains once per seed")] = "42,43,44",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="key=value trainer config override (repeatable)")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Methods to leave out in turn (default: every approved method)")
    ] = None,
    classical: Annotated[
        bool, typer.Option("--classical/--no-classical", help="Also report each arm's ensemble with TF-IDF")
    ] = True,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the runs, then print the report")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between checks with --wait", callback=between(0.05, 3600))] = 2.0,
) -> None:
    """Train without augmented variants, with all approved ones, and with each method left out; compare per class."""
    from trainer.config import parse_set_option

    seed_list = parse_seeds(seeds)  # "1,,2" is a typo, not two seeds, as for `augloop train`
    if len(set(seed_list)) != len(seed_list):
        fail("--seeds must be distinct")
    method_list = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    overrides = parse_set_option(set_ or [])
    with session_scope(engine()) as session:
        request = impact_service.ReportRequest(seed_list, overrides, method_list, classical)
        report, jobs = impact_service.start_report(session, dataset, request, user=None)
        report_id, arms = report["id"], list(report["run_ids"])
    console.print(
        f"impact report {report_id}: queued {quantity(len(jobs), 'job')} ({', '.join(arms)}; "
        f"{quantity(len(seed_list), 'seed')} per arm); follow with `augloop report show {report_id}`",
        highlight=False,
    )
    if not wait:
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs ended", total=_state(report_id)["progress"]["total"])
        while True:
            state = _state(report_id)
            bar.update(task, completed=state["progress"]["done"])
            if state["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(poll)
    print_report(state)
    if state["status"] != "succeeded":
        raise typer.Exit(1)


@report_app.command("show")
def show(report_id: Annotated[int, typer.Argument(help="Impact report id", min=1, max=MAX_ID)]) -> None:
    """Status, progress and (once computed) the per-class table of an impact report."""
    print_report(_state(report_id))
