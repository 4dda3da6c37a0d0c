"""`augloop train`, `augloop ensemble`, `augloop runs list|show`: the trainer from the command line.

`train` runs in this process with a progress bar (or, with --queue, enqueues jobs for the workers); either way
each seed is a TrainingRun row, so `runs show`, the API and the UI see CLI runs too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

train_app = typer.Typer(add_completion=False)
runs_app = typer.Typer(help="List and inspect training runs and ensembles.", no_args_is_help=True)
train_app.add_typer(runs_app, name="runs")

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _engine():  # type: ignore[no-untyped-def]
    from db.session import get_engine

    return get_engine()


def _parse_seeds(raw: str | None) -> list[int]:
    if not raw:
        return []
    try:
        return [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        _fail(f"--seeds takes integers separated by commas, e.g. 42,43,44; got {raw!r}")
        return []


def print_metrics(metrics: dict[str, Any] | None, title: str, *, confusion: bool = False) -> None:
    if not metrics:
        console.print(f"{title}: no labelled samples")
        return
    overall = metrics.get("overall_macro_f1")
    console.print(
        f"[bold]{title}[/]: overall macro-F1 (mean of tasks) {overall:.4f}"
        if overall is not None
        else f"{title}: -",
        highlight=False,
    )
    for task, m in metrics["tasks"].items():
        if m["macro_f1"] is None:
            continue
        table = Table(
            title=f"{task}: macro-F1 {m['macro_f1']:.4f} · accuracy {m['accuracy']:.4f} · n {m['n']}",
            title_justify="left",
        )
        for col in ("class", "precision", "recall", "F1", "support"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for label, c in m["per_class"].items():
            table.add_row(
                label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])
            )
        console.print(table)
        if confusion:
            labels = m["confusion"]["labels"]
            cm = Table(title=f"{task}: confusion (rows gold, columns predicted)", title_justify="left")
            cm.add_column("gold \\ pred")
            for label in labels:
                cm.add_column(label[:10], justify="right")
            for label, row in zip(labels, m["confusion"]["matrix"], strict=True):
                cm.add_row(label, *map(str, row))
            console.print(cm)


class _Bar:
    """Turns trainer events into a rich progress display: epochs overall, batches of the current epoch."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label
        self.epochs = progress.add_task(f"{label} epochs", total=None)
        self.batches = progress.add_task("batches", total=None)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        p = self.progress
        if kind == "start":
            p.update(self.epochs, total=event["epochs"], completed=0)
            p.console.print(
                f"{self.label}: {event['train_samples']} train / {event['val_samples']} val / "
                f"{event['test_samples']} test samples on {event['device']} "
                f"({event['threads']} threads, amp {event['amp']})",
                highlight=False,
            )
        elif kind == "batch":
            p.update(
                self.batches,
                total=event["batches"],
                completed=event["batch"],
                description=f"epoch {event['epoch']} · loss {event['loss']:.4f}",
            )
        elif kind == "epoch":
            p.update(self.epochs, completed=event["epoch"])
            p.console.print(
                f"  epoch {event['epoch']}: train loss {event['train_loss']:.4f} · val macro-F1 "
                f"{event['val_macro_f1']:.4f} (best {event['best_val_macro_f1']:.4f} at epoch "
                f"{event['best_epoch']}) · {event['samples_per_s'] or 0:.1f} samples/s",
                highlight=False,
            )
        elif kind == "scoring":
            p.update(
                self.batches, total=event["total"], completed=event["done"], description="scoring variants"
            )


@train_app.command("train")
def train(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    encoder: Annotated[
        Optional[str], typer.Option(help="Hugging Face encoder name or local directory")
    ] = None,
    seeds: Annotated[
        Optional[str], typer.Option(help="Seeds, e.g. 42,43,44: one run each, then an ensemble")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Maximum tokens per text")] = None,
    max_train_samples: Annotated[
        Optional[int], typer.Option(help="Train on a seeded subset of this size")
    ] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML file of config keys")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="key=value config override (repeatable)")
    ] = None,
    name: Annotated[str, typer.Option(help="Run name")] = "",
    queue_: Annotated[bool, typer.Option("--queue", help="Enqueue jobs for the workers instead")] = False,
) -> None:
    """Train the multi-task model on train originals + approved variants; print test F1 per task and class."""
    # Before torch loads OpenMP: passive waiting keeps threads from stalling one another on a CPU shared with
    # other work (measured 3-8x slower with the default spinning); export OMP_WAIT_POLICY=ACTIVE to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import yaml

    from db.errors import DomainError
    from trainer.config import parse_set_option

    overrides: dict[str, Any] = {}
    try:
        if config is not None:
            if not config.is_file():
                _fail(f"config file not found: {config}")
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            if not isinstance(loaded, dict):
                _fail(f"{config}: expected a mapping of config keys")
            overrides.update(loaded)
        overrides.update(parse_set_option(set_ or []))
    except yaml.YAMLError as err:
        _fail(f"{config}: not valid YAML: {err}")
    except DomainError as err:
        _fail(err.message)
    for key, value in (
        ("encoder", encoder),
        ("epochs", epochs),
        ("max_length", max_length),
        ("max_train_samples", max_train_samples),
    ):
        if value is not None:
            overrides[key] = value
    seed_list = _parse_seeds(seeds)
    try:
        run_ids = _create_runs(dataset, overrides, seed_list, name, queue_)
    except DomainError as err:
        _fail(err.message)
    if queue_:
        return
    finished = [rid for rid in run_ids if _train_in_process(rid)]
    if len(finished) >= 2:
        ensemble_cmd([str(r) for r in finished], unweighted=False, no_temperature=False, name="")
    if len(finished) < len(run_ids):
        raise typer.Exit(1)


def _create_runs(
    dataset: str, overrides: dict[str, Any], seeds: list[int], name: str, enqueue: bool
) -> list[int]:
    from db import queue
    from db.datasets import get_dataset
    from db.session import session_scope
    from trainer.runs import create_training_runs, default_config

    cfg = default_config(overrides)
    with session_scope(_engine()) as session:
        ds = get_dataset(session, dataset)
        runs = create_training_runs(session, ds, cfg, seeds, name=name)
        for run in runs:
            if enqueue:
                job = queue.enqueue(
                    session,
                    "train",
                    {"run_id": run.id, "dataset": ds.name},
                    dataset_id=ds.id,
                    progress_total=cfg.epochs,
                    max_attempts=2,
                )
                run.job_id = job.id
                console.print(
                    f"queued run {run.id} ({run.name}) as job {job.id}; follow with "
                    f"`augloop runs show {run.id}`",
                    highlight=False,
                )
        session.flush()
        return [r.id for r in runs]


def _train_in_process(run_id: int) -> bool:
    from db.errors import DomainError
    from db.models import JobStatus
    from trainer.runs import execute_run, record_end

    engine = _engine()
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            summary = execute_run(engine, run_id, progress=_Bar(progress, f"run {run_id}"))
    except KeyboardInterrupt:
        record_end(engine, run_id, JobStatus.cancelled, "interrupted")
        err_console.print(f"run {run_id} interrupted")
        raise typer.Exit(130) from None
    except DomainError as err:
        record_end(engine, run_id, JobStatus.failed, err.message)
        _fail(err.message)
    except Exception as err:
        record_end(engine, run_id, JobStatus.failed, f"{type(err).__name__}: {err}")
        err_console.print(f"[bold red]run {run_id} failed:[/] {type(err).__name__}: {err}")
        return False
    run = _load_run(run_id)
    console.print(
        f"run {run_id} finished: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
        f"{summary['train_samples']} training samples, {summary['variants_scored']} pending variants "
        f"scored; artifacts in {summary['artifact_dir']}",
        highlight=False,
    )
    print_metrics(run["metrics"].get("test"), f"run {run_id} test")
    return True


def _load_run(run_id: int) -> dict[str, Any]:
    from db.models import Dataset
    from db.session import session_scope
    from db.training_runs import get_run

    with session_scope(_engine()) as session:
        run = get_run(session, run_id)
        return {
            "id": run.id,
            "dataset": session.get_one(Dataset, run.dataset_id).name,
            "name": run.name,
            "kind": run.kind,
            "status": run.status,
            "config": run.config,
            "curve": run.curve,
            "metrics": run.metrics,
            "member_ids": run.member_ids,
            "error": run.error,
            "artifact_dir": run.artifact_dir,
            "snapshot_size": len(run.snapshot or []),
            "created_at": run.created_at.isoformat(),
            "job_id": run.job_id,
        }


@train_app.command("ensemble")
def ensemble_cmd(
    run_ids: Annotated[list[str], typer.Argument(help="Finished run ids (two or more)")],
    unweighted: Annotated[bool, typer.Option("--unweighted", help="Equal weights, not val macro-F1")] = False,
    no_temperature: Annotated[
        bool, typer.Option("--no-temperature", help="Skip temperature scaling")
    ] = False,
    name: Annotated[str, typer.Option(help="Ensemble name")] = "",
) -> None:
    """Combine finished runs (seeds or architectures): average probabilities, temperature-scale per task."""
    from db.errors import DomainError
    from db.session import session_scope
    from trainer.runs import create_ensemble

    try:
        ids = [int(r) for r in run_ids]
    except ValueError:
        _fail(f"run ids must be integers; got {run_ids}")
        return
    try:
        with session_scope(_engine()) as session:
            run = create_ensemble(
                session, ids, weighted=not unweighted, temperature=not no_temperature, name=name
            )
            run_id, metrics, config = run.id, run.metrics, run.config
    except DomainError as err:
        _fail(err.message)
        return
    members = ", ".join(
        f"run {k}: test {v['test']:.4f}" for k, v in metrics["members"].items() if v.get("test") is not None
    )
    temps = ", ".join(f"{t} T={v:.2f}" for t, v in config["temperatures"].items())
    console.print(
        f"ensemble {run_id} of runs {ids} ({'weighted by val macro-F1' if not unweighted else 'equal'}"
        f" weights; {temps}); members: {members}",
        highlight=False,
    )
    print_metrics(metrics.get("test"), f"ensemble {run_id} test")


@runs_app.command("list")
def runs_list(
    dataset: Annotated[Optional[str], typer.Option(help="Only this dataset")] = None,
    kind: Annotated[Optional[str], typer.Option(help="single or ensemble")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 50,
) -> None:
    """Runs and ensembles with their status and headline scores."""
    from db.datasets import get_dataset
    from db.errors import DomainError
    from db.models import Dataset
    from db.session import session_scope
    from db.training_runs import list_runs

    try:
        with session_scope(_engine()) as session:
            ds = get_dataset(session, dataset) if dataset else None
            names = {d.id: d.name for d in session.query(Dataset)}
            table = Table("id", "dataset", "name", "kind", "status", "epochs", "val F1", "test F1", "created")
            for r in list_runs(session, ds, kind, None, limit):
                val = (r.metrics.get("val") or {}).get("overall_macro_f1")
                test = (r.metrics.get("test") or {}).get("overall_macro_f1")
                table.add_row(
                    str(r.id),
                    names.get(r.dataset_id, "?"),
                    r.name,
                    r.kind,
                    r.status,
                    str(len(r.curve)),
                    f"{val:.4f}" if val is not None else "-",
                    f"{test:.4f}" if test is not None else "-",
                    f"{r.created_at:%Y-%m-%d %H:%M}",
                )
    except DomainError as err:
        _fail(err.message)
    console.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(help="Run id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole run as JSON")] = False,
) -> None:
    """A run's config, curve and val/test metrics per task and class (with confusion matrices)."""
    from db.errors import DomainError

    try:
        run = _load_run(run_id)
    except DomainError as err:
        _fail(err.message)
        return
    if as_json:
        print(json.dumps(run, indent=2, default=str))
        return
    console.print(
        f"run {run['id']} · {run['name']} · dataset {run['dataset']} · {run['kind']} · {run['status']}"
        + (f" · error: {run['error']}" if run["error"] else ""),
        highlight=False,
    )
    if run["kind"] == "single":
        cfg = run["config"]
        console.print(
            f"encoder {cfg.get('encoder')} · seed {cfg.get('seed')} · max length {cfg.get('max_length')} "
            f"· {run['snapshot_size']} training samples",
            highlight=False,
        )
    else:
        console.print(
            f"members {run['member_ids']} · weights {run['config'].get('weights')} · temperatures "
            f"{run['config'].get('temperatures')}",
            highlight=False,
        )
    for entry in run["curve"]:
        console.print(
            f"  epoch {entry['epoch']}: loss {entry['train_loss']:.4f} · val macro-F1 "
            f"{entry['val_macro_f1']:.4f}",
            highlight=False,
        )
    print_metrics(run["metrics"].get("val"), "val")
    print_metrics(run["metrics"].get("test"), "test", confusion=True)
