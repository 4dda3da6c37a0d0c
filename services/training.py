"""Training: configs checked against the dataset, runs queued (one per seed, a TF-IDF member on request, the
seeds' learning-rate selection first when it applies), followed. Ensembles are services.ensembles; executing a
run is services.run_execution, LR selection services.lr_selection; serving a model is services.prediction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError, ValidationFailed
from core.names import check_display_name
from core.settings import get_settings
from db import impact_reports as db_reports
from db import queue
from db import training_runs as db_runs
from db.datasets import view_label_counts
from db.models import Dataset, Job, JobStatus, TrainingRun, User
from services.access import Need, is_admin, shown_path, shown_provenance, visible_project_ids, visible_run
from services.compute_bounds import check_capacity, check_config
from services.failures import worker_silent
from services.listing import listed_values
from services.run_snapshots import snapshot_json, snapshot_size
from trainer.classical import ClassicalConfig
from trainer.config import SEED_MAX, ZERO_WEIGHTS, TrainConfig
from trainer.examples import TWO_CLASSES_NEEDED, fewer_than_two
from trainer.plan import search_wanted


def runs_root() -> Path:
    return get_settings().data_dir.resolve() / "runs"


def checkpoint_dir(run_id: int) -> Path:
    """Where run `run_id` keeps its training checkpoint between attempts (its staging area in the data dir)."""
    return runs_root() / f"{run_id}.checkpoint"


def attempt_leftovers(run_id: int) -> list[Path]:
    """What run `run_id`'s attempts keep beside its artifacts: the checkpoint, and the directories of attempts
    that never ended (a worker killed by SIGKILL; their training request holds every training text)."""
    return [checkpoint_dir(run_id), *runs_root().glob(f"{run_id}.partial-*")]


def default_config(overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The recipe's defaults, with the deployment's default encoder (AUGLOOP_TRAINER_DEFAULT_ENCODER). A request
    that gives both `fixed_epochs` and `budget_minutes` is refused: the length trains at any pace, so the budget
    would bound nothing while the run showed it (only an impact report's LR selection sets both, knowingly)."""
    given = overrides or {}
    if given.get("fixed_epochs") is not None and given.get("budget_minutes") is not None:
        raise ValidationFailed(
            "config.fixed_epochs trains its length at any pace, so budget_minutes would not bound it: give one of them",
            field="config.fixed_epochs",
        )
    settings = get_settings()
    base: dict[str, Any] = {"encoder": settings.trainer_default_encoder} if settings.trainer_default_encoder else {}
    return TrainConfig.from_dict({**base, **given})


def check_seeds(seeds: list[int]) -> None:
    """Seeds distinct and within numpy's range, named as the request gave them (`seeds`, `--seeds`): a seed out of
    range was refused naming `config.seed`, a key the request never gave."""
    if len(set(seeds)) != len(seeds):
        raise ValidationFailed("seeds must be distinct", field="seeds")
    bad = [seed for seed in seeds if not 0 <= seed <= SEED_MAX]
    if bad:
        raise ValidationFailed(f"seeds must be from 0 to {SEED_MAX}; got {bad[0]}", field="seeds")


def check_seeds_given_once(overrides: dict[str, Any], seeds: list[int]) -> None:
    """A request's config names `seed` beside `seeds`: one of them would be dropped without a word (the seeds
    won), so one of them is a mistake."""
    if seeds and "seed" in overrides:
        raise ValidationFailed(
            f"config.seed ({overrides['seed']!r}) and seeds {seeds} both give the runs' seeds: give seeds (one run "
            "each) or config.seed (one run), not both",
            field="config.seed",
        )


def check_config_against(dataset: Dataset, config: TrainConfig) -> None:
    """Task and label names in the config must exist in the dataset (caught at request time, not in a job)."""
    known = dataset.task_names()
    for key, names in (
        ("tasks", config.tasks or []),
        ("task_weights", list(config.task_weights)),
        ("class_label_smoothing", list(config.class_label_smoothing)),
    ):
        unknown = [t for t in names if t not in known]
        if unknown:
            raise ValidationFailed(
                f"dataset {dataset.name!r} has tasks {known}; unknown: {unknown}", field=f"config.{key}"
            )
    if config.tasks is not None:  # a weight or a smoothing for a task the run leaves out is a mistake to say
        for key, names in (
            ("task_weights", list(config.task_weights)),
            ("class_label_smoothing", list(config.class_label_smoothing)),
        ):
            left_out = [t for t in names if t not in config.tasks]
            if left_out:
                raise ValidationFailed(
                    f"config.{key} names task(s) {left_out} that config.tasks {config.tasks} leaves out",
                    field=f"config.{key}",
                )
    if not any(config.task_weights.get(task, 1.0) > 0 for task in config.tasks or known):
        raise ValidationFailed(ZERO_WEIGHTS, field="config.task_weights")
    for task, per_label in config.class_label_smoothing.items():
        bad = [label for label in per_label if label not in dataset.labels_of(task)]
        if bad:
            raise ValidationFailed(
                f"task {task!r} has labels {dataset.labels_of(task)}; unknown: {bad}",
                field="config.class_label_smoothing",
            )


def check_trainable(session: Session, dataset: Dataset, config: TrainConfig) -> None:
    """What a run's job would refuse after the queue, said at request time: a task with fewer than two classes
    among the training view's texts (no classifier learns one class; a one-class task would also score a
    perfect, meaningless macro-F1 into the overall figure), or a task without labelled validation text (early
    stopping, the LR selection and the decision rule read val). The job checks the final view again
    (trainer.examples.require_two_classes: exclusions and the leak guard may leave a class out)."""
    if config.max_train_samples is not None and config.max_train_samples < 2:
        # one text holds one class of every task: each run failed on the worker, and an impact report with it
        raise ValidationFailed(
            f"config.max_train_samples {config.max_train_samples} draws one training text, which holds one class "
            "of every task: a classifier needs two classes; draw at least 2 texts",
            field="config.max_train_samples",
        )
    tasks = config.tasks or dataset.task_names()
    # the run's own view: originals alone when it leaves the variants out (`variants: none`), less the methods
    # it leaves out (an impact report's originals arm leaves out every augmentation method), where a class only
    # approved variants hold trained as one class and "succeeded"
    view = {"original", "approved"} if config.variants == "approved" else {"original"}
    counts = view_label_counts(session, dataset, view, {"train", "val"}, config.exclude_methods)
    for task in tasks:
        held = fewer_than_two([label for t, split, label, _n in counts if t == task and split == "train"])
        if held is not None:
            raise ValidationFailed(
                f"task {task!r} has {held} in the training split of dataset {dataset.name!r}: " + TWO_CLASSES_NEEDED,
                field="config.tasks",
            )
    with_val = {task for task, split, _label, _n in counts if split == "val"}
    no_val = [task for task in tasks if task not in with_val]
    if no_val:
        # Per task: a task without val was trained blind (early stopping, the LR selection and the decision rule
        # read the other tasks only) and still counted in the test figure.
        raise ValidationFailed(
            f"dataset {dataset.name!r} has no labelled validation text (split 'val') for task(s) {no_val}: "
            "training stops early, selects its learning rate and fits its decision rule on val. Label val texts "
            "for them, leave them out (config.tasks), or let augloop draw the split (leave the split column out)",
            field="config.tasks" if len(no_val) < len(tasks) else "dataset",
        )


def check_classical_trainable(session: Session, dataset: Dataset, config: TrainConfig) -> None:
    """The TF-IDF member's cross-validation needs, per task, two train texts of one class from different
    families (trainer/classical.py): said at request time, where it was said only after the transformer runs
    had spent their budget. Counted on the texts the member trains on (its folds fall back to them all where the
    originals are too few); check_trainable has already found two classes."""
    tasks = config.tasks or dataset.task_names()
    largest: dict[str, int] = {}
    view = {"original", "approved"} if config.variants == "approved" else {"original"}
    for task, _split, _label, n in view_label_counts(session, dataset, view, {"train"}):
        largest[task] = max(largest.get(task, 0), n)
    for task in tasks:
        if largest.get(task, 0) < 2:
            raise ValidationFailed(
                f"task {task!r}: the TF-IDF member's cross-validation needs two train texts of one class in "
                f"dataset {dataset.name!r}, and no class has two; label more texts, or train without the member",
                field="classical",
            )


def classical_config(config: TrainConfig) -> ClassicalConfig:
    """The TF-IDF member's config: the same training view (tasks, variants, exclusions, and `max_train_samples`'
    draw, by the first seed: the member trained on every text while its seeds drew theirs) and decision rule."""
    return ClassicalConfig(
        tasks=config.tasks,
        variants=config.variants,
        exclude_methods=config.exclude_methods,
        max_train_samples=config.max_train_samples,
        seed=config.seed,
        decision=config.decision,
    )


RUN_LABEL_MAX = 150  # a run's name is "<label> seed <seed>" or "<label> member", within training_runs.name's 200


def create_training_runs(
    session: Session,
    dataset: Dataset,
    config: TrainConfig,
    seeds: list[int],
    *,
    name: str = "",
    created_by: int | None = None,
    classical: bool = False,
) -> list[TrainingRun]:
    """One run per seed (a seed ensemble when several), each with the full config it will train with; with
    `classical`, one TF-IDF member run (kind `tfidf`) on the same training view, last."""
    check_config_against(dataset, config)
    check_trainable(session, dataset, config)
    if classical:
        check_classical_trainable(session, dataset, config)
    check_seeds(seeds)
    if len(name) > RUN_LABEL_MAX:  # the API's schema says so; the CLI's --name comes here too
        raise ValidationFailed(f"name: at most {RUN_LABEL_MAX} characters; got {len(name)}", field="name")
    if name:  # shown to people in lists and the CLI: printable, as a display name (U+202E would reverse a line)
        name = check_display_name(name, field="name")
    runs = []
    label = name or "/".join(Path(config.encoder).parts[-2:])  # hub "org/name", or a directory's last two
    if len(label) > RUN_LABEL_MAX:  # a long directory name: its end, within the column's width with " seed N"
        label = "…" + label[-(RUN_LABEL_MAX - 1) :]
    for seed in seeds or [config.seed]:
        run_config = config.with_overrides({"seed": seed}).to_dict()
        runs.append(
            db_runs.create_run(session, dataset, run_config, name=f"{label} seed {seed}", created_by=created_by)
        )
    if classical:
        first_seed = config.with_overrides({"seed": (seeds or [config.seed])[0]})
        runs.append(
            db_runs.create_run(
                session,
                dataset,
                classical_config(first_seed).model_dump(),
                name=f"{name or 'tf-idf'} member",
                kind="tfidf",
                created_by=created_by,
            )
        )
    return runs


# Requests ------------------------------------------------------------------------------------------


def start_training(
    session: Session,
    dataset_name: str,
    overrides: dict[str, Any],
    seeds: list[int],
    *,
    name: str = "",
    user: User | None,
    classical: bool = False,
) -> tuple[list[TrainingRun], list[Job]]:
    """Queue a training run per seed (and a TF-IDF member with `classical`): their LR selection first when it
    applies (one `lr_select` job for the seeds), else a `train` job each. The project's leads (None: the
    operator)."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, user, Need.lead, field="dataset")
    created_by = user.id if user else None
    check_seeds_given_once(overrides, seeds)
    config = default_config(overrides)
    check_config(config, seeds, user)
    check_budget_affords(session, dataset_name, config, overrides, seeds, user)
    runs = create_training_runs(session, dataset, config, seeds, name=name, created_by=created_by, classical=classical)
    jobs = queue_runs(session, dataset, runs, config, created_by=created_by)
    check_capacity(session, dataset, user)
    return runs, jobs


def check_budget_affords(
    session: Session,
    dataset_name: str,
    config: TrainConfig,
    overrides: dict[str, Any],
    seeds: list[int],
    user: User | None,
) -> None:
    """A budget the estimate finds too short for any training is refused now (422 on budget_minutes), not after
    the worker has spent LR trials on it (or, at the command line, after its run was recorded and failed); the
    run plans again from the throughput it measures (an impact report's, from its LR selection's)."""
    if config.budget_minutes is not None:
        from services.training_estimate import training_plan

        training_plan(session, dataset_name, overrides, seeds, user)


def queue_runs(
    session: Session,
    dataset: Dataset,
    runs: list[TrainingRun],
    config: TrainConfig,
    *,
    created_by: int | None,
    payload: dict[str, Any] | None = None,
    fix_length: bool = False,
) -> list[Job]:
    """Jobs for the runs of one request. The transformer runs share one `lr_select` job when LR selection may
    apply, or with `fix_length` and a budget (an impact report: the job plans every run's length once; see
    services.lr_selection); it queues their `train` jobs when it is done, `payload` included. Otherwise each
    run, and always the TF-IDF member, gets its `train` job (2 attempts). The job is recorded on its runs."""
    transformer = [r for r in runs if r.kind == "single"]
    jobs: list[Job] = []
    fixing = fix_length and config.budget_minutes is not None
    if transformer and (search_wanted(config) or fixing):
        job = queue.enqueue(
            session,
            "lr_select",
            {
                "run_ids": [r.id for r in transformer],
                "dataset": dataset.name,
                "trials": config.lr_trials,
                "train_payload": payload or {},
                **({"fix_length": True} if fixing else {}),
            },
            dataset_id=dataset.id,
            created_by=created_by,
            progress_total=config.lr_trials,
            max_attempts=2,
        )
        for run in transformer:
            run.job_id = job.id
            run.lr_selection = {"status": "queued", "job_id": job.id}
        jobs.append(job)
        rest = [r for r in runs if r.kind != "single"]
    else:
        rest = runs
    jobs += enqueue_train_jobs(session, dataset.id, dataset.name, rest, created_by=created_by, payload=payload)
    return jobs


def enqueue_train_jobs(
    session: Session,
    dataset_id: int,
    dataset_name: str,
    runs: list[TrainingRun],
    *,
    created_by: int | None,
    payload: dict[str, Any] | None = None,
    held_by: str | None = None,
) -> list[Job]:
    """A `train` job per run, recorded on the run: queued for the workers (2 attempts), or with `held_by` held
    from the start by that process for its one attempt (in-process training, `create_runs_for`). `payload`
    adds to each job's payload."""
    jobs = []
    for run in runs:
        job = queue.enqueue(
            session,
            "train",
            {"run_id": run.id, "dataset": dataset_name, **({"in_process": True} if held_by else {}), **(payload or {})},
            dataset_id=dataset_id,
            created_by=created_by,
            progress_total=int((run.config or {}).get("epochs", 1)) if run.kind == "single" else 1,
            max_attempts=1 if held_by else 2,
            held_by=held_by,
            lease_seconds=get_settings().cli_job_lease_seconds if held_by else None,
        )
        run.job_id = job.id
        jobs.append(job)
    session.flush()
    return jobs


def run_summary(
    run: TrainingRun,
    dataset_name: str,
    job: Job | None,
    user: User | None,
    now: datetime | None = None,
    impact_arm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run's headline: status, scores, live progress of its job. Its encoder as `user` may see it: a lead may
    name a model directory of the server's, which the project's members see by its last part, as a variant's
    model (access.shown_provenance); a hub id reads as it is. `impact_arm`: the impact report and arm that
    trained it (db.impact_reports.arms_of_runs), an arm leaving variants out on purpose."""
    metrics = run.metrics or {}
    encoder = (run.config or {}).get("encoder") or (run.config or {}).get("model")
    return {
        "id": run.id,
        "dataset": dataset_name,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "job_id": run.job_id,
        "member_ids": list(run.member_ids or []),
        "encoder": encoder if is_admin(user) else shown_provenance(encoder),
        "seed": (run.config or {}).get("seed"),
        "variants": (run.config or {}).get("variants", "approved") if run.kind == "single" else None,
        "impact_arm": impact_arm,
        "budget_minutes": (run.config or {}).get("budget_minutes"),
        "lr_selection": _selection_summary(run.lr_selection),
        "val_macro_f1": (metrics.get("val") or {}).get("overall_macro_f1"),
        "test_macro_f1": (metrics.get("test") or {}).get("overall_macro_f1"),
        "best_epoch": metrics.get("best_epoch"),
        "epochs_done": len(run.curve or []),
        "progress": (
            {
                "status": job.status,
                "done": job.progress_done,
                "total": job.progress_total,
                **(job.progress_info or {}),
                # its worker stopped answering (by the database's clock `now`): nothing trains it until a worker
                # looks for work (services.failures.worker_silent)
                "worker_silent": now is not None and worker_silent(job.status, job.lease_until, now),
            }
            if job is not None
            else None
        ),
        "error": run.error,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def _selection_summary(selection: dict[str, Any] | None) -> dict[str, Any] | None:
    if not selection:
        return None
    keep = ("status", "reason", "scale", "lr", "trial_steps", "budget_minutes_after", "recipe")
    return {k: selection.get(k) for k in keep if k in selection}


def run_details(run: TrainingRun, summary: dict[str, Any], user: User | None) -> dict[str, Any]:
    """A run in full, its `summary` (run_summary) and more: config, curve, metrics per task and class (with the
    plan and the decision rule), how its learning rate was chosen (every trial), artifact location (for `user`:
    access.shown_path), the config's model directories as run_summary shows the encoder."""
    config = run.config or {}
    return {
        **summary,
        "lr_selection_detail": run.lr_selection,
        "config": config if is_admin(user) else shown_provenance(config),
        "curve": run.curve or [],
        "metrics": run.metrics or {},
        "snapshot_size": snapshot_size(run),
        "artifact_dir": shown_path(run.artifact_dir, user),
    }


def _jobs_of(session: Session, runs: list[TrainingRun]) -> dict[int, Job]:
    ids = [r.job_id for r in runs if r.job_id is not None]
    return {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}


def list_training_runs(
    session: Session,
    *,
    dataset: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
    user: User | None,
) -> list[dict[str, Any]]:
    """Runs and ensembles, newest first, with their headline scores and live progress; those of the user's
    projects (admins: all)."""
    from services.datasets import dataset_named

    statuses = listed_values(status, [s.value for s in JobStatus], "status")
    if kind is not None and kind not in db_runs.RUN_KINDS:  # a typo would list nothing and look like an answer
        raise ValidationFailed(f"kind must be one of {', '.join(db_runs.RUN_KINDS)}; got {kind!r}", field="kind")
    if limit < 1:
        raise ValidationFailed(f"limit must be at least 1; got {limit}", field="limit")
    ds = dataset_named(session, dataset, user, field="dataset") if dataset else None
    runs = db_runs.list_runs(session, ds, kind, statuses, limit, offset, visible_project_ids(session, user))
    names = dict(session.execute(select(Dataset.id, Dataset.name)).tuples().all())
    jobs = _jobs_of(session, runs)
    now = queue.db_now(session)
    arms = db_reports.arms_of_runs(session, {r.dataset_id for r in runs})
    return [
        run_summary(r, names.get(r.dataset_id, ""), jobs.get(r.job_id or -1), user, now, arms.get(r.id)) for r in runs
    ]


def training_run(session: Session, run_id: int, user: User | None) -> dict[str, Any]:
    run = visible_run(session, run_id, user)
    dataset = session.get_one(Dataset, run.dataset_id)
    job = session.get(Job, run.job_id) if run.job_id else None
    arm = db_reports.arms_of_runs(session, {run.dataset_id}).get(run.id)
    return run_details(run, run_summary(run, dataset.name, job, user, queue.db_now(session), arm), user)


def run_snapshot(session: Session, run_id: int, user: User | None) -> Iterator[str]:
    """The [sample_id, content_hash] pairs the run trained on, as JSON text chunks read from its snapshot file
    batch by batch (or from the row, for runs recorded before snapshot files). Only a run that succeeded has
    one: a queued, running, failed or cancelled run answered 200 with size 0, as though it trained on nothing."""
    run = visible_run(session, run_id, user)
    if run.status != JobStatus.succeeded:
        raise ConflictError(
            f"run {run_id} is {run.status}: the texts a run trained on are recorded when it succeeds",
            field="run_id",
        )
    if run.snapshot_path is not None and not Path(run.snapshot_path).is_file():
        raise NotFoundError(f"the snapshot file of run {run_id} is gone", field="run_id")
    return snapshot_json(run)


def ensemble_details(session: Session, run: TrainingRun, user: User | None) -> dict[str, Any]:
    return run_details(run, run_summary(run, session.get_one(Dataset, run.dataset_id).name, None, user), user)


def create_runs_for(
    session: Session,
    dataset_name: str,
    overrides: dict[str, Any],
    seeds: list[int],
    *,
    held_by: str,
    name: str = "",
    created_by: int | None = None,
    classical: bool = False,
) -> tuple[list[TrainingRun], list[Job]]:
    """Runs (one per seed, and the TF-IDF member with `classical`) for in-process training (the operator's, at
    the command line), each with a `train` job already held by that process (`held_by`) for its one attempt.
    The process renews the jobs' leases while it lives and ends them as their runs end; when it dies without a
    word (kill -9, a power cut), the leases expire and the queue's sweep ends job and run as failed, instead of a
    run left "running" that nothing will ever end. No worker takes such a job up: it is never queued."""
    from services.datasets import dataset_named
    from services.jobs import settle_lost_jobs

    settle_lost_jobs(session)  # runs whose process died before end now, before new ones join them
    dataset = dataset_named(session, dataset_name, None, field="dataset")
    check_seeds_given_once(overrides, seeds)
    config = default_config(overrides)
    check_budget_affords(session, dataset_name, config, overrides, seeds, None)
    runs = create_training_runs(session, dataset, config, seeds, name=name, created_by=created_by, classical=classical)
    jobs = enqueue_train_jobs(session, dataset.id, dataset.name, runs, created_by=created_by, held_by=held_by)
    return runs, jobs
