"""`augloop train`: the trainer from the command line (`augloop ensemble` and `runs` are in cli_runs.py).

`train` runs in this process with a progress bar (or, with --queue, enqueues jobs for the workers); either way
each seed is a TrainingRun row, so `runs show`, the API and the UI see CLI runs too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from augloop.cli_runs import ensemble_cmd, load_run, print_metrics
from augloop.console import console, engine, err_console, fail
from db.session import session_scope

train_app = typer.Typer(add_completion=False)
train_app.command("ensemble")(ensemble_cmd)


def _parse_seeds(raw: str | None) -> list[int]:
    if not raw:
        return []
    try:
        return [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds takes integers separated by commas, e.g. 42,43,44; got {raw!r}")


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

    from trainer.config import parse_set_option

    overrides: dict[str, Any] = {}
    try:
        if config is not None:
            if not config.is_file():
                fail(f"config file not found: {config}")
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            if not isinstance(loaded, dict):
                fail(f"{config}: expected a mapping of config keys")
            overrides.update(loaded)
        overrides.update(parse_set_option(set_ or []))
    except yaml.YAMLError as err:
        fail(f"{config}: not valid YAML: {err}")
    for key, value in (
        ("encoder", encoder),
        ("epochs", epochs),
        ("max_length", max_length),
        ("max_train_samples", max_train_samples),
    ):
        if value is not None:
            overrides[key] = value
    seed_list = _parse_seeds(seeds)
    run_ids = _create_runs(dataset, overrides, seed_list, name, queue_)
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
    from services import training

    with session_scope(engine()) as session:
        if not enqueue:
            return [r.id for r in training.create_runs_for(session, dataset, overrides, seeds, name=name)]
        started = training.start_training(session, dataset, overrides, seeds, name=name)
        for run, job in started:
            console.print(
                f"queued run {run.id} ({run.name}) as job {job.id}; follow with `augloop runs show {run.id}`",
                highlight=False,
            )
        return [run.id for run, _job in started]


def _train_in_process(run_id: int) -> bool:
    from core.errors import DomainError
    from db.models import JobStatus
    from services.run_execution import execute_run, record_end
    from trainer.errors import TrainerError

    db = engine()
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            summary = execute_run(db, run_id, progress=_Bar(progress, f"run {run_id}"))
    except KeyboardInterrupt:
        record_end(db, run_id, JobStatus.cancelled, "interrupted")
        err_console.print(f"run {run_id} interrupted")
        raise typer.Exit(130) from None
    except (DomainError, TrainerError) as err:
        record_end(db, run_id, JobStatus.failed, err.message)
        raise
    except Exception as err:
        record_end(db, run_id, JobStatus.failed, f"{type(err).__name__}: {err}")
        err_console.print(f"[bold red]run {run_id} failed:[/] {type(err).__name__}: {err}")
        return False
    run = load_run(run_id)
    console.print(
        f"run {run_id} finished: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
        f"{summary['train_samples']} training samples, {summary['variants_scored']} pending variants "
        f"scored; artifacts in {summary['artifact_dir']}",
        highlight=False,
    )
    print_metrics(run["metrics"].get("test"), f"run {run_id} test")
    return True


