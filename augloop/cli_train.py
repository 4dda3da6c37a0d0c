"""`augloop train`: the trainer from the command line (`augloop ensemble` and `runs` are in cli_runs.py).

`train` runs in this process with a progress bar (or, with --queue, enqueues jobs for the workers); either way
each seed is a TrainingRun row, so `runs show`, the API and the UI see CLI runs too. In process it does what the
jobs do, in order: the seeds' learning-rate selection when it applies, each seed, the TF-IDF member, then the
ensemble of all of them (weights, temperatures and decision rule fitted on val).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from augloop.cli_runs import decision_line, ensemble_cmd, load_run, print_metrics, soup_line
from augloop.console import Terminated, console, engine, err_console, fail, parse_seeds
from db.session import session_scope
from trainer.config import TrainConfig

# the recipe's defaults, as --help says them (TrainConfig's own: one place for the number)
RECIPE = {name: field.default for name, field in TrainConfig.model_fields.items()}

if TYPE_CHECKING:
    from workers.held_jobs import HeldJobs

train_app = typer.Typer(add_completion=False)
train_app.command("ensemble")(ensemble_cmd)


def _progress(*more: ProgressColumn) -> Progress:
    """A transient display on the console: what runs, a bar, done of total, time so far (and `more`)."""
    # the description names the run (its encoder, a user's path) and the phase: plain text, styled by the column
    what = TextColumn("{task.description}", style="progress.description", markup=False)
    columns = [what, BarColumn(), MofNCompleteColumn()]
    return Progress(*columns, TimeElapsedColumn(), *more, console=console, transient=True)


class _Bar:
    """Turns trainer events into a rich progress display: epochs overall, batches of the current epoch."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label
        self.epochs = progress.add_task(f"{label} epochs", total=None)
        self.batches = progress.add_task("batches", total=None)

    def _batches(self, total: int, completed: int, description: str) -> None:
        self.progress.update(self.batches, total=total, completed=completed, description=description)

    def _say(self, line: str) -> None:
        self.progress.console.print(line, highlight=False)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        p = self.progress
        if kind == "start":
            p.update(self.epochs, total=event["epochs"], completed=0)
            plan = event.get("plan") or {}
            self._say(
                f"{self.label}: {event['train_samples']} train / {event['val_samples']} val / "
                f"{event['test_samples']} test samples on {event['device']} "
                f"({event['threads']} threads, amp {event['amp']}); plan: {plan.get('steps')} steps "
                f"({plan.get('epochs')} epochs) of batch {plan.get('batch_size')} × {plan.get('grad_accum')}, "
                f"LR {plan.get('lr', 0):.3g}, R-Drop {plan.get('rdrop_alpha')}, LLRD {plan.get('llrd_decay')}"
                + (f", weights averaged (EMA {plan['ema_decay']:.4f})" if plan.get("ema_decay") else "")
            )
        elif kind == "trial_batch":
            trial = f"LR trial {event['trial']}/{event['trials']} · loss {event['loss']:.4f}"
            self._batches(event["batches"], event["batch"], trial)
        elif kind == "trial":
            self._say(
                f"  LR trial {event['trial']}: {event['scale']:g} × planned LR ({event['lr']:.3g}), "
                f"{event['steps']} steps: val macro-F1 {event['val_macro_f1']:.4f}"
            )
        elif kind == "phase":  # a fresh bar: rich cannot take a total back, and the last epoch's is not the phase's
            p.remove_task(self.batches)
            self.batches = p.add_task(event["phase"], total=None)
        elif kind == "batch":
            self._batches(event["batches"], event["batch"], f"epoch {event['epoch']} · loss {event['loss']:.4f}")
        elif kind == "epoch":
            p.update(self.epochs, completed=event["epoch"])
            self._say(
                f"  epoch {event['epoch']}: train loss {event['train_loss']:.4f} · val macro-F1 "
                f"{event['val_macro_f1']:.4f} (best {event['best_val_macro_f1']:.4f} at epoch "
                f"{event['best_epoch']}) · {event['samples_per_s'] or 0:.1f} samples/s"
            )
        elif kind == "scoring":
            self._batches(event["total"], event["done"], "scoring variants")
        elif kind == "checkpoint_failed":  # training goes on without it
            self._say(f"  warning: {event['error']}")


@train_app.command("train")
def train(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    encoder: Annotated[str | None, typer.Option(help="Hugging Face encoder name or local directory")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 42,43,44: one run each, then an ensemble")] = None,
    epochs: Annotated[
        int | None, typer.Option(help=f"Maximum epochs (default: the recipe's {RECIPE['epochs']})")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help=f"Maximum tokens per text (default: the recipe's {RECIPE['max_length']})")
    ] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Train on a seeded subset of this size")] = None,
    budget_minutes: Annotated[
        float | None,
        typer.Option(help="Minutes of training per run: steps, LR and regularisers are planned to fit"),
    ] = None,
    classical: Annotated[
        bool, typer.Option("--classical/--no-classical", help="Also train the TF-IDF member and ensemble it")
    ] = True,
    config: Annotated[Path | None, typer.Option("--config", help="A YAML file of config keys")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value config override (repeatable)")] = None,
    name: Annotated[str, typer.Option(help="Run name")] = "",
    queue_: Annotated[bool, typer.Option("--queue", help="Enqueue jobs for the workers instead")] = False,
) -> None:
    """Train the multi-task model on train originals + approved variants; print test F1 per task and class."""
    # Before torch loads OpenMP: passive waiting keeps threads from stalling one another on a CPU shared with
    # other work (measured 3-8x slower with the default spinning); export OMP_WAIT_POLICY=ACTIVE to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from trainer.config import parse_set_option, read_config_file

    overrides: dict[str, Any] = {}
    if config is not None:
        if config.is_dir():
            fail(f"--config names a folder, not a YAML file: {config}")
        if not config.is_file():
            fail(f"config file not found: {config}")
        overrides.update(read_config_file(config))  # a TrainerError naming the file: exit 2 (augloop/console.py)
    sets = parse_set_option(set_ or [])
    overrides.update(sets)
    for key, value in (
        ("encoder", encoder),
        ("epochs", epochs),
        ("max_length", max_length),
        ("max_train_samples", max_train_samples),
        ("budget_minutes", budget_minutes),
    ):
        if value is not None:
            if key in sets:  # which one wins is no rule to learn: one of them is a mistake (a bad --set went unread)
                fail(f"--{key.replace('_', '-')} and --set {key}=… both give {key}; give it once")
            overrides[key] = value
    seed_list = parse_seeds(seeds)
    if queue_:
        _queue_runs(dataset, overrides, seed_list, name, classical)
        return
    from workers.held_jobs import HeldJobs
    from workers.main import new_worker_id

    worker_id = f"cli:{new_worker_id()}"
    runs, select_lr = _create_held_runs(dataset, overrides, seed_list, name, classical, worker_id)
    with HeldJobs(engine(), worker_id, {run_id: (job_id, total) for run_id, _kind, job_id, total in runs}) as held:
        transformer = [run_id for run_id, kind, *_ in runs if kind == "single"]
        # LR selection applies: its trials first, for all seeds at once
        if select_lr and transformer and not _select_in_process(transformer):
            raise typer.Exit(1)
        finished = [run_id for run_id, *_ in runs if _train_in_process(held, run_id)]
    if len(finished) >= 2:
        ensemble_cmd([str(r) for r in finished], unweighted=False, no_temperature=False, decision="prior", name="")
    if len(finished) < len(runs):
        raise typer.Exit(1)


def _create_held_runs(
    dataset: str, overrides: dict[str, Any], seeds: list[int], name: str, classical: bool, worker_id: str
) -> tuple[list[tuple[int, str, int, int]], bool]:
    """(run id, kind, job id, job's progress total) per run created, each job held by this process; and whether
    LR selection applies."""
    from services import training
    from services.datasets import dataset_named
    from trainer.model import check_encoder_found
    from trainer.plan import search_wanted
    from trainer.predict import resolve_device

    # This process loads it: an encoder it cannot find, or a device it does not have, exits 2 before any run is
    # recorded (a failed run and a cancelled TF-IDF member were left behind, and the error printed twice)
    with session_scope(engine()) as session:  # the dataset, then the config against it, first (no hub wait)
        found = dataset_named(session, dataset, None)
        training.check_seeds_given_once(overrides, seeds)
        config = training.default_config(overrides)
        training.check_config_against(found, config)
    resolve_device(config.device)
    check_encoder_found(config.encoder)
    with session_scope(engine()) as session:
        runs, jobs = training.create_runs_for(
            session, dataset, overrides, seeds, held_by=worker_id, name=name, classical=classical
        )
        created = [(run.id, run.kind, job.id, job.progress_total) for run, job in zip(runs, jobs, strict=True)]
    return created, search_wanted(config)


def _queue_runs(dataset: str, overrides: dict[str, Any], seeds: list[int], name: str, classical: bool) -> None:
    from core.encoders import directory_problem
    from services import training

    with session_scope(engine()) as session:
        runs, jobs = training.start_training(
            session, dataset, overrides, seeds, name=name, user=None, classical=classical
        )
        by_id = {job.id: job for job in jobs}
        for run in runs:
            job = by_id.get(run.job_id or -1)
            what = f"job {job.id} ({job.kind})" if job else "a job"
            console.print(
                f"queued run {run.id} ({run.name}) behind {what}; follow with `augloop runs show {run.id}`",
                highlight=False,
            )
        encoder = training.default_config(overrides).encoder
    # A worker on another machine may hold a directory this one has not, or a complete copy of one this machine
    # holds in part: said, not refused (in this process, such a directory exits 2 as the load fails)
    if (problem := directory_problem(encoder)) is not None:
        err_console.print(
            f"warning: the encoder {encoder!r} is {problem} on this machine: the workers must have the model "
            "there, or the runs fail when they load it",
            highlight=False,
        )


def _select_in_process(run_ids: list[int]) -> bool:
    """The seeds' learning-rate selection in this process (what the `lr_select` job does)."""
    from core.errors import DomainError
    from db.models import JobStatus
    from services.failures import failure_text
    from services.lr_selection import execute_selection
    from services.run_execution import record_end
    from trainer.errors import TrainerError

    db = engine()
    try:
        with _progress() as progress:
            summary = execute_selection(
                db, run_ids, enqueue_training=False, progress=_Bar(progress, f"LR selection for runs {run_ids}")
            )
    except KeyboardInterrupt as err:
        for run_id in run_ids:
            record_end(db, run_id, JobStatus.cancelled, "interrupted during learning-rate selection")
        if isinstance(err, Terminated):
            raise  # SIGTERM or SIGHUP: exit code 128 + the signal's number
        raise typer.Exit(130) from None
    except (DomainError, TrainerError) as err:
        for run_id in run_ids:
            record_end(db, run_id, JobStatus.failed, f"learning-rate selection: {err.message}")
        raise
    except Exception as err:  # noqa: BLE001 - any failure ends the runs as failed, with its message
        for run_id in run_ids:
            record_end(db, run_id, JobStatus.failed, f"learning-rate selection: {failure_text(err)}")
        err_console.print(
            f"[bold red]learning-rate selection failed:[/] {type(err).__name__}: {escape(str(err))}", markup=True
        )
        return False
    console.print(f"learning-rate selection: {summary['status']}: {summary['reason']}", highlight=False)
    if summary.get("recipe_reason"):
        console.print(summary["recipe_reason"], highlight=False)
    return True


def _train_in_process(held: HeldJobs, run_id: int) -> bool:
    """Train one run under its held job: progress goes to the bar and to the job (the API and the UI show
    it); a cancellation asked for elsewhere stops it at its next step; the job ends with the run."""
    from core.errors import DomainError
    from db.models import JobStatus
    from services.failures import failure_text
    from services.run_execution import drop_leftovers_if_ended, execute_run, planned_epochs
    from services.training_data import left_out_line
    from trainer.errors import TrainerError
    from workers.held_jobs import LeaseLost
    from workers.registry import JobCancelled
    from workers.train_jobs import train_progress

    db = engine()
    ctx = held.context(run_id)
    try:
        ctx.check_cancelled()  # asked while the LR selection or an earlier run went on
        report = train_progress(ctx, planned_epochs(db, run_id))
        with _progress(TimeRemainingColumn()) as progress:
            bar = _Bar(progress, f"run {run_id}")

            def on_event(event: dict[str, Any]) -> None:
                if not ctx.completed:  # the job ends with the run's last write, before its `finished` event
                    report(event)  # raises once the job was cancelled or lost, before anything more is shown
                bar(event)

            summary = execute_run(
                db, run_id, job_id=ctx.job_id, worker_id=ctx.worker_id, progress=on_event, finish=ctx.complete_in
            )
        held.finished(run_id)
    except KeyboardInterrupt as err:
        held.end(run_id, JobStatus.cancelled, "interrupted")
        err_console.print(f"run {run_id} interrupted")
        if isinstance(err, Terminated):
            raise  # SIGTERM or SIGHUP: exit code 128 + the signal's number
        raise typer.Exit(130) from None
    except JobCancelled:
        held.end(run_id, JobStatus.cancelled, "cancelled")
        err_console.print(f"run {run_id} cancelled (its job {ctx.job_id} was cancelled)")
        return False
    except LeaseLost:
        held.finished(run_id)  # no longer ours: the queue's sweep ended it while this process was stopped
        drop_leftovers_if_ended(db, run_id)  # what this process wrote after the sweep cleaned up
        err_console.print(
            f"[bold red]run {run_id} stopped:[/] its job {ctx.job_id} was ended by the queue (this process did "
            "not renew its lease in time: was it suspended?)",
            markup=True,
        )
        return False
    except (DomainError, TrainerError) as err:
        held.end(run_id, JobStatus.failed, err.message)
        raise
    except Exception as err:  # noqa: BLE001 - any failure ends the run as failed, with its message
        held.end(run_id, JobStatus.failed, failure_text(err))
        err_console.print(f"[bold red]run {run_id} failed:[/] {type(err).__name__}: {escape(str(err))}", markup=True)
        return False
    run = load_run(run_id)
    if run["kind"] == "tfidf":
        console.print(
            f"run {run_id} (TF-IDF member) finished: {summary['train_samples']} training samples, C per task "
            f"{run['metrics'].get('chosen_c')}; artifacts in {run['artifact_dir']}",
            highlight=False,
        )
    else:
        console.print(
            f"run {run_id} finished: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
            f"{summary['train_samples']} training samples, {summary['variants_scored']} pending variants "
            f"scored; artifacts in {run['artifact_dir']}",
            highlight=False,
        )
        if run["metrics"].get("soup"):
            console.print(soup_line(run["metrics"]["soup"]), highlight=False)
    if run["metrics"].get("left_out"):
        console.print(left_out_line(run["metrics"]["left_out"]), highlight=False)
    if line := decision_line(run["metrics"]):
        console.print(line, highlight=False)
    print_metrics(run["metrics"].get("test"), f"run {run_id} test")
    return True
