"""What a non-admin may ask the trainer for: bounded configs, few seeds, a cap on a project's training jobs in
flight, and encoders only from the hub or the models directory.

A training request is checked here before anything is queued (services.training, services.impact and the
estimate). Admins and the operator at the command line (user None) are not bound, except that nothing tells
anyone what exists on a worker's disk: an encoder refused here gets the same message whether or not the path
exists, and a worker that cannot load an encoder says so without the reason (trainer.model.load_encoder).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from core.errors import QuotaExceeded, ValidationFailed
from core.settings import get_settings
from db.models import Dataset, User
from db.projects import jobs_in_flight, runs_in_flight, take_quota_turn
from services.access import is_admin
from trainer.config import TrainConfig

# Ceilings on the config keys whose value multiplies a run's time or memory. Each is well above the recipe's
# value (epochs 20, head 3 × 768, batch 12 × 4, max length 320), so no sensible run hits one; past them a
# request is a mistake or an attempt to hold the workers.
CONFIG_LIMITS: dict[str, float] = {
    "epochs": 50,
    "head_layers": 4,
    "head_hidden": 4096,
    "batch_size": 256,
    "eval_batch_size": 512,
    "grad_accum": 64,
    "max_length": 512,
    "budget_minutes": 24 * 60,
    "oversample_max": 16,
    "curriculum_epochs": 50,
    "patience": 50,
    "num_threads": 64,
    "nproc": 8,  # processes of a distributed run, each holding the encoder and its optimizer state
    "soup_size": 4,  # a CPU copy of the weights per epoch kept for the soup, in memory and in every checkpoint
}
# A checkpoint (model, optimizer, schedule) costs seconds: every step would multiply a run's time.
MIN_CHECKPOINT_EVERY_STEPS = 50
MAX_SEEDS = 5

# A hub id: "name" or "org/name"; every part starts with a letter or digit (no ".", "..", "/" or "~" lead).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
ENCODER_RULE = (
    "config.encoder must be a hub id (name or org/name) or a directory under the models directory (AUGLOOP_MODELS_DIR)"
)


def check_encoder(encoder: str, user: User | None) -> None:
    """Non-admins: a hub id, the server's default encoder, or an absolute path that stays under the models
    directory once resolved (no `..`, no symlink out). The refusal is the same whether the path exists or not."""
    if is_admin(user):
        return
    if HUB_ID.fullmatch(encoder) and ".." not in encoder:
        return
    default = get_settings().trainer_default_encoder
    if default and encoder == default:  # the operator's own choice (AUGLOOP_TRAINER_DEFAULT_ENCODER), wherever it is
        return
    path = Path(encoder)
    if path.is_absolute() and ".." not in path.parts:
        root = get_settings().resolved_models_dir
        if path.resolve().is_relative_to(root):
            return
    raise ValidationFailed(ENCODER_RULE, field="config.encoder")


def check_config(config: TrainConfig, seeds: list[int], user: User | None) -> None:
    """The config keys within CONFIG_LIMITS, checkpoints no more often than MIN_CHECKPOINT_EVERY_STEPS, at most
    MAX_SEEDS seeds, and an allowed encoder (non-admins)."""
    if is_admin(user):
        return
    for key, ceiling in CONFIG_LIMITS.items():
        value = getattr(config, key)
        if value is not None and value > ceiling:
            raise ValidationFailed(
                f"config.{key} may be at most {ceiling:g} (an admin can start larger runs); got {value:g}",
                field=f"config.{key}",
            )
    every = config.checkpoint_every_steps
    if every is not None and every < MIN_CHECKPOINT_EVERY_STEPS:
        raise ValidationFailed(
            f"config.checkpoint_every_steps may be no less than {MIN_CHECKPOINT_EVERY_STEPS} (an admin can "
            f"checkpoint more often); got {every}",
            field="config.checkpoint_every_steps",
        )
    if len(seeds) > MAX_SEEDS:
        raise ValidationFailed(f"at most {MAX_SEEDS} seeds per request; got {len(seeds)}", field="seeds")
    check_encoder(config.encoder, user)


def _within_cap(
    session: Session,
    dataset: Dataset,
    user: User | None,
    count: Callable[[Session, int], int],
    cap: int,
    what: str,
    tail: str,
    field: str,
) -> None:
    """For non-admins: the project's queued and running work as `count` counts it, the request's own (flushed,
    not committed) included, stays within `cap`; past it, 429, and the caller's transaction rolls the request
    back. The count waits for the project's other quota checks (take_quota_turn), so two requests at once do not
    each miss the other's."""
    if is_admin(user):
        return
    take_quota_turn(session, dataset.project_id)
    in_flight = count(session, dataset.project_id)
    if in_flight > cap:
        raise QuotaExceeded(
            f"this request would make {in_flight} {what} queued or running in the project; at most {cap} at once "
            f"{tail}",
            field=field,
            extra={"in_flight": in_flight, "limit": cap},
        )


def check_capacity(session: Session, dataset: Dataset, user: User | None) -> None:
    """Called once a request's training runs are queued: at most AUGLOOP_MAX_TRAINING_JOBS_PER_PROJECT transformer
    runs queued or running (_within_cap). Runs, not jobs: a learning-rate selection is one job that queues a
    training job per seed when it ends, so counting jobs let one request of 5 seeds count as 1. A TF-IDF member
    (seconds on a CPU) is not counted, as a selection's job was not before."""
    cap = get_settings().max_training_jobs_per_project
    tail = "(AUGLOOP_MAX_TRAINING_JOBS_PER_PROJECT): retry with fewer seeds, or when some have finished"
    _within_cap(session, dataset, user, runs_in_flight, cap, "training runs", tail, "seeds")


# Jobs a member queues that read a whole dataset and are capped together (max_other_jobs_per_project).
OTHER_KINDS = ("export", "label_scores", "pseudo_label")


def check_other_capacity(session: Session, dataset: Dataset, user: User | None) -> None:
    """Called once a request's export, pseudo-labelling or label-model scoring job is queued: at most
    AUGLOOP_MAX_OTHER_JOBS_PER_PROJECT of them (_within_cap). The queue is shared: without a cap one member could
    put hundreds of exports ahead of every other project's jobs (and a file of the dataset on disk for each)."""
    cap = get_settings().max_other_jobs_per_project
    tail = "(AUGLOOP_MAX_OTHER_JOBS_PER_PROJECT): retry when some have finished"
    _within_cap(
        session,
        dataset,
        user,
        lambda s, project_id: jobs_in_flight(s, project_id, OTHER_KINDS, "jobs"),
        cap,
        "export, pseudo-labelling and scoring jobs",
        tail,
        "dataset",
    )
