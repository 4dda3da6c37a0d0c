"""Before starting a run: the config it would train with and about how long it would take.

The estimate is a cost model, not a promise. Time per epoch = training texts / samples per second, where the
rate comes from, in order of preference:

1. a finished run of this deployment with the same encoder, on the same kind of device and in the precision the
   config asks for (any under `amp: auto`): its measured samples/s (median over epochs),
   scaled by the tokens per text the new max length allows against the old one (batches are padded to their
   own longest text, so a text shorter than either limit costs the same under both);
2. otherwise a reference rate measured on a 2-core CPU (README, Training > Speed: all-MiniLM-L6-v2, 6 layers
   × 384, 12.9 samples/s at max length 64 with R-Drop), scaled by the encoder's size (layers × hidden², read
   from its local config.json when there is one; else bert-base's 12 × 768), by the tokens per text, by R-Drop
   (two forward passes) and by the CPU threads.

Validation runs every epoch (forward only: about a third of a training step per text); the finished run also
scores the pending variants once.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Dataset, JobStatus, Origin, ReviewStatus, Sample, SampleLabel, TrainingRun, User
from services.access import is_admin, shown_provenance, visible_project_ids, without_server_paths
from services.compute_bounds import check_config
from services.training import check_config_against, check_trainable, default_config
from trainer.config import configured_precision
from trainer.examples import subsample
from trainer.plan import RDROP_COST, Throughput, plan_run

REFERENCE = {"samples_per_s": 12.9, "layers": 6, "hidden": 384, "tokens": 48.0, "rdrop": True, "threads": 2}
BERT_BASE = (12, 768)
CHARS_PER_TOKEN = 4.0  # English subword tokenizers: about 4 characters per token
FORWARD_SHARE = 1 / 3  # a forward-only pass costs about a third of a training step


def encoder_size(encoder: str, user: User | None = None) -> tuple[int, int, str]:
    """(layers, hidden, where it was read) of an encoder: its local config.json, else bert-base's. For a
    non-admin, only an absolute path (compute_bounds.check_encoder kept it under the models directory) is read:
    a hub id is not looked up as a folder under the API's working directory, or the answer would tell whether
    one exists there."""
    config = Path(encoder) / "config.json"
    if not is_admin(user) and not Path(encoder).is_absolute():
        return (*BERT_BASE, "assumed bert-base size (no local config.json)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        return int(data["num_hidden_layers"]), int(data["hidden_size"]), str(config)
    except (OSError, ValueError, KeyError, TypeError):
        return (*BERT_BASE, "assumed bert-base size (no local config.json)")


def encoder_warning(encoder: str, user: User | None) -> str | None:
    """Why a worker on this machine could not load the encoder, where the server can tell without loading it: a
    hub id neither in the Hugging Face cache nor downloadable (HF_HUB_OFFLINE), a folder without a model (for
    admins, and absolute paths: a member's relative name is not looked up as a folder of the server's). The
    run was started and failed seconds later ("cannot load encoder"), where the Augment page said it before."""
    from workers.augment.availability import UNAVAILABLE, hub_status, model_status

    setting = "the encoder (config.encoder; AUGLOOP_TRAINER_DEFAULT_ENCODER for the default)"
    looks_local = encoder.startswith((".", "/", "~"))
    # the operator's default is theirs to have chosen: looked up as it is, for anyone (a relative folder too)
    chosen_by_operator = encoder == (get_settings().trainer_default_encoder or "").strip()
    if is_admin(user) or chosen_by_operator:
        status = model_status(encoder, setting)
    elif Path(encoder).is_absolute():  # a member's, under the models directory (compute_bounds.check_encoder)
        status = model_status(encoder, setting)
        if status["state"] == UNAVAILABLE:  # one answer whether the folder exists or not: nothing of the disk
            return f"{Path(encoder).name} holds no model a worker here can load; set {setting} to one that does"
    elif looks_local:
        return None
    else:
        status = hub_status(encoder, setting)
    if status["state"] != UNAVAILABLE:
        return None
    reason: str = status["reason"]
    return reason if is_admin(user) else without_server_paths(reason)


def mean_tokens(lengths: list[int], max_length: int) -> float:
    """Tokens per text once truncated at max_length, estimated from character counts."""
    if not lengths:
        return float(min(max_length, REFERENCE["tokens"]))
    return statistics.fmean(min(max_length, 2 + n / CHARS_PER_TOKEN) for n in lengths)


def measured_rate(
    session: Session,
    encoder: str,
    device: str = "auto",
    projects: set[int] | None = None,
    amp: str = "auto",
) -> tuple[float, int, int] | None:
    """(samples/s of one training pass in one process, max_length, run id) of the newest finished single run
    with this encoder on the same kind of device, in a precision `amp` allows (`auto`: any, as the worker's
    machine resolved it; else the one asked for: bf16 autocast trains 1.3× faster than fp32 on a CPU that has
    it), if any, among the datasets of `projects` (None: all); a run that trained with R-Drop fed each batch
    twice, so its rate is doubled back; a DDP run's rate (all its processes together) is shared among them."""
    query = select(TrainingRun).where(
        TrainingRun.kind == "single",
        TrainingRun.status == JobStatus.succeeded,
        # in the query, not the loop: the newest 50 runs of any encoder hid an older run of this one
        TrainingRun.config["encoder"].as_string() == encoder,
    )
    if projects is not None:  # another project's runs, ids and settings are not the caller's to see
        query = query.where(TrainingRun.dataset_id.in_(select(Dataset.id).where(Dataset.project_id.in_(projects))))
    # newest first, 50 at a time until one fits: a single read of the newest 50 let fifty runs of this encoder
    # on another device (or in another precision, or without a measured rate) hide the one that fits
    before: int | None = None
    while True:
        page = query if before is None else query.where(TrainingRun.id < before)
        runs = list(session.scalars(page.order_by(TrainingRun.id.desc()).limit(50)))
        for run in runs:
            config = run.config or {}
            if config.get("encoder") != encoder or _device_kind(config.get("device", "auto")) != _device_kind(device):
                continue
            precision = (run.metrics or {}).get("precision")  # recorded since 8b0da98; unknown before
            if precision is not None and configured_precision(amp) not in (None, precision):
                continue
            rates = [e["samples_per_s"] for e in run.curve or [] if isinstance(e.get("samples_per_s"), int | float)]
            if rates:
                plan = (run.metrics or {}).get("plan") or {}
                rdrop = plan.get("rdrop_alpha", run.config.get("rdrop_alpha"))
                passes = RDROP_COST if isinstance(rdrop, int | float) and rdrop > 0 else 1.0
                processes = max(1, int(config.get("nproc") or 1))
                return statistics.median(rates) * passes / processes, int(config.get("max_length", 320)), run.id
        if len(runs) < 50:
            return None
        before = runs[-1].id


def _device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else str(device)


def joins_training(config: Any) -> Any:
    """Originals, plus approved variants unless the config trains on originals only (or leaves methods out)."""
    if config.variants == "none":
        return Sample.origin == Origin.original
    approved = Sample.review_status == ReviewStatus.approved
    if config.exclude_methods:
        approved = approved & Sample.method.not_in(config.exclude_methods)
    return or_(Sample.origin == Origin.original, approved)


def training_plan(
    session: Session, dataset_name: str, overrides: dict[str, Any], seeds: list[int], user: User | None
) -> dict[str, Any]:
    """The full config a run would get, the data it would see, and the estimated time (the project's members
    may ask)."""
    from services.datasets import dataset_named

    dataset: Dataset = dataset_named(session, dataset_name, user, field="dataset")
    config = default_config(overrides)
    check_config(config, seeds, user)  # before encoder_size reads the encoder's config.json from disk
    check_config_against(dataset, config)
    check_trainable(session, dataset, config)
    tasks = config.tasks or dataset.task_names()
    rows: list[tuple[int, int]] = [
        (length, family)
        for length, family in session.execute(
            select(func.length(Sample.text), func.coalesce(Sample.parent_id, Sample.id))
            .where(
                Sample.dataset_id == dataset.id,
                Sample.split == "train",
                joins_training(config),
                # labelled in a chosen task: the trainer drops the others (services.training_data)
                Sample.id.in_(select(SampleLabel.sample_id).where(SampleLabel.task.in_(tasks))),
            )
            .order_by(Sample.id)
        )
    ]
    # As the trainer does: max_train_samples draws texts first (in the training view's order, by the run's seed),
    # then an epoch shows one text of each family among them (one_per_source).
    rows = subsample(rows, config.max_train_samples, seeds[0] if seeds else config.seed)
    train_texts = len(rows)  # what the run trains on in all (its train_samples)
    if config.variant_sampling == "one_per_source":
        rows = list({family: (length, family) for length, family in rows}.values())
    train_lengths = [length for length, _family in rows]
    evaluation = (
        session.scalar(
            select(func.count()).where(
                Sample.dataset_id == dataset.id, Sample.origin == Origin.original, Sample.split.in_(("val", "test"))
            )
        )
        or 0
    )
    pending = (
        session.scalar(
            select(func.count()).where(
                Sample.dataset_id == dataset.id,
                Sample.origin != Origin.original,
                Sample.review_status == ReviewStatus.pending,
            )
        )
        or 0
    )
    tokens = mean_tokens(train_lengths, config.max_length)
    measured = measured_rate(session, config.encoder, config.device, visible_project_ids(session, user), amp=config.amp)
    if measured is not None:
        rate, old_length, run_id = measured
        rate *= mean_tokens(train_lengths, old_length) / tokens
        basis = (
            f"run #{run_id} with the same encoder trained at {measured[0]:.1f} samples/s per process "
            f"(max length {old_length}); scaled to max length {config.max_length}"
        )
    else:
        layers, hidden, source = encoder_size(config.encoder, user)
        if not is_admin(user):  # the worker's paths are not for non-admins to read
            source = "its config.json" if source.endswith("config.json") else source
        size = (REFERENCE["layers"] * REFERENCE["hidden"] ** 2) / (layers * hidden**2)
        threads = config.num_threads or REFERENCE["threads"]
        passes = RDROP_COST if REFERENCE["rdrop"] else 1.0  # the reference fed each batch twice
        rate = REFERENCE["samples_per_s"] * size * (REFERENCE["tokens"] / tokens) * passes
        rate *= min(threads, 8) / REFERENCE["threads"] if threads > REFERENCE["threads"] else 1.0
        basis = (
            f"reference CPU rate ({REFERENCE['samples_per_s']} samples/s for a 6 × 384 encoder at "
            f"{REFERENCE['tokens']:.0f} tokens per text on 2 cores), scaled to {layers} × {hidden} ({source}) "
            f"and {tokens:.0f} tokens per text; no finished run with this encoder to measure from"
        )
    # `rate`: one training pass (no R-Drop); the plan decides R-Drop, accumulation and the steps a budget
    # affords from the same throughput the trainer measures (trainer/plan.py).
    eval_rate = rate / FORWARD_SHARE  # validation runs on one process (rank 0)
    eval_seconds = evaluation / eval_rate
    n_train = max(1, len(train_lengths))
    planned = config
    if config.nproc > 1:  # a DDP run: the plan of one process at the global batch; training at best nproc × rate
        planned = config.model_copy(update={"batch_size": config.global_batch, "nproc": 1})
        rate *= config.nproc
        basis += f"; × {config.nproc} processes (DDP, perfect scaling assumed)"
    plan = plan_run(
        planned,
        n_train=n_train,
        batches_per_epoch=math.ceil(n_train / planned.batch_size),
        encoder_width=encoder_size(config.encoder, user)[1],
        throughput=Throughput(seconds_per_sample=1 / rate, eval_seconds=eval_seconds),
    )
    passes = RDROP_COST if plan.rdrop_alpha > 0 else 1.0
    per_epoch = len(train_lengths) * passes / rate + eval_seconds * plan.evals_per_epoch
    per_run = (plan.estimated_seconds or 0.0) + pending / eval_rate
    runs = max(1, len(seeds))
    return {
        "dataset": dataset.name,
        # the encoder as run views show it: a folder of the server's (the operator's default encoder) by its last
        # part to members (access.shown_provenance), whole to admins
        "config": config.to_dict() if is_admin(user) else shown_provenance(config.to_dict()),
        "plan": plan.to_dict(),
        "runs": runs,
        "train_examples": len(train_lengths),
        "train_texts": train_texts,
        "eval_examples": evaluation,
        "pending_to_score": pending,
        "tokens_per_text": round(tokens, 1),
        "samples_per_second": round(rate, 2),
        "epochs": round(plan.epochs, 2),
        "seconds_per_epoch": round(per_epoch, 1),
        "seconds_per_run": round(per_run, 1),
        "seconds_total": round(per_run * runs, 1),
        "basis": basis,
        "note": "a run may stop early (patience); runs queued together share the workers",
        "encoder_warning": encoder_warning(config.encoder, user),
    }
