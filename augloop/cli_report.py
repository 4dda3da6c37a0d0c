"""`augloop report impact NAME` and `augloop report show ID`: augmentation impact reports from the shell.

`impact` enqueues the report's training jobs (the workers run them); `--wait` follows the runs with a progress
bar and prints the report once the last one has ended.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

report_app = typer.Typer(help="Augmentation impact reports.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _engine():  # type: ignore[no-untyped-def]
    from db.session import get_engine

    return get_engine()


def _state(report_id: int) -> dict[str, Any]:
    from db import impact_reports as db_reports
    from db.session import session_scope
    from trainer.impact import progress

    with session_scope(_engine()) as session:
        report = db_reports.get_report(session, report_id)
        return {
            "id": report.id,
            "status": report.status,
            "progress": progress(report, db_reports.report_runs(session, report)),
            "result": report.result,
            "run_ids": report.run_ids or {},
        }


def _fmt_ci(entry: dict[str, Any]) -> str:
    if entry.get("delta") is None:
        return "-"
    low, high = entry["ci"]
    return f"{entry['delta'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def print_report(state: dict[str, Any]) -> None:
    progress = state["progress"]
    console.print(
        f"[bold]impact report {state['id']}[/]: {state['status']} "
        f"({progress['done']}/{progress['total']} runs ended)",
        highlight=False,
    )
    result = state.get("result") or {}
    if "error" in result:
        console.print(f"[red]{escape(str(result['error']))}[/]", highlight=False)
    for task, info in (result.get("tasks") or {}).items():
        table = Table(
            title=f"{task}: F1 ×100, mean ± sd over seeds {result.get('seeds')}; Δ vs originals [95% CI]",
            title_justify="left",
        )
        for col in ("class", "arm", "F1", "Δ [95% CI]"):
            table.add_column(col, justify="left" if col in ("class", "arm") else "right")
        for name, arms in info["classes"].items():
            for arm, entry in arms.items():
                table.add_row(
                    escape(name),
                    escape(arm),
                    f"{entry['mean'] * 100:.1f} ± {entry['sd'] * 100:.1f}",
                    _fmt_ci(entry),
                )
        console.print(table)
        contributions = info.get("contributions") or {}
        if any(contributions.values()):
            ctable = Table(
                title=f"{task}: contribution = all approved − without the method", title_justify="left"
            )
            for col in ("class", "method", "Δ [95% CI]"):
                ctable.add_column(col, justify="right" if col.startswith("Δ") else "left")
            for name, methods in contributions.items():
                for method, entry in methods.items():
                    ctable.add_row(escape(name), escape(method), _fmt_ci(entry))
            console.print(ctable)


@report_app.command("impact")
def impact(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    seeds: Annotated[
        str, typer.Option(help="Seeds, comma-separated: each arm trains once per seed")
    ] = "42,43,44",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="key=value trainer config override (repeatable)")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Methods to leave out in turn (default: every approved method)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the runs, then print the report")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between checks with --wait", min=0.05)] = 2.0,
) -> None:
    """Train on originals only, on all approved variants, and with each method left out; compare per class."""
    from db.datasets import get_dataset
    from db.errors import DomainError
    from db.session import session_scope
    from trainer.config import parse_set_option
    from trainer.impact import create_impact_report
    from trainer.runs import default_config

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        _fail(f"--seeds takes integers separated by commas, e.g. 42,43,44; got {seeds!r}")
        return
    if len(set(seed_list)) != len(seed_list):
        _fail("--seeds must be distinct")
    method_list = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    try:
        config = default_config(parse_set_option(set_ or []))
        with session_scope(_engine()) as session:
            report, jobs = create_impact_report(
                session, get_dataset(session, dataset), config, seeds=seed_list, methods=method_list
            )
            report_id, arms = report.id, list(report.run_ids)
    except DomainError as err:
        _fail(err.message)
        return
    console.print(
        f"impact report {report_id}: queued {len(jobs)} training jobs ({len(arms)} arms × {len(seed_list)} "
        f"seeds: {', '.join(arms)}); follow with `augloop report show {report_id}`",
        highlight=False,
    )
    if not wait:
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs ended", total=len(jobs))
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
def show(report_id: Annotated[int, typer.Argument(help="Impact report id", min=1)]) -> None:
    """Status, progress and (once computed) the per-class table of an impact report."""
    from db.errors import DomainError

    try:
        state = _state(report_id)
    except DomainError as err:
        _fail(err.message)
        return
    print_report(state)
